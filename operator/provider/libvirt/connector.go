// Package libvirt implements the provider interfaces over libvirt, through
// libvirt.org/go/libvirt (cgo). One connection per hypervisor URI is shared by
// every caller, kept alive, and reopened with backoff when it breaks.
package libvirt

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	golibvirt "libvirt.org/go/libvirt"

	"github.com/novacron/operator/operator/provider"
)

var eventLoopOnce sync.Once

// startEventLoop runs libvirt's default event loop, which keepalive needs to
// notice a dead peer. It runs once per process.
func startEventLoop() {
	eventLoopOnce.Do(func() {
		if err := golibvirt.EventRegisterDefaultImpl(); err != nil {
			return
		}
		go func() {
			for {
				if err := golibvirt.EventRunDefaultImpl(); err != nil {
					time.Sleep(time.Second)
				}
			}
		}()
	})
}

// Connector shares one libvirt connection per URI. Each host is dialed and
// timed on its own, so one host that is down or slow never holds up the
// callers of another.
type Connector struct {
	// Dial opens a connection; tests replace it to simulate an outage.
	Dial func(uri string) (*golibvirt.Connect, error)
	// MinBackoff and MaxBackoff bound the wait between failed connection tries.
	MinBackoff, MaxBackoff time.Duration
	// Rules say which hypervisor URIs the operator connects to at all.
	Rules URIRules
	// Timeouts bound each kind of call whose caller set no earlier deadline.
	Timeouts Timeouts
	// MaxAbandoned is how many calls a host may leave unanswered (given up
	// on by their callers, still running in libvirt) before further calls
	// to it fail fast: libvirt calls cannot be cancelled, so without a bound
	// a hung host would collect one goroutine per try.
	MaxAbandoned int

	mu    sync.Mutex
	hosts map[string]*host
}

// Timeouts bound libvirt calls. A caller's earlier deadline always wins.
type Timeouts struct {
	// Dial bounds opening a connection.
	Dial time.Duration
	// Call bounds a lookup, a definition, a start: what libvirt answers at once.
	Call time.Duration
	// Long bounds calls that take as long as the data they move: snapshots
	// with the guest's memory, reverts, uploads.
	Long time.Duration
}

// host is one URI's connection and its dialing state.
type host struct {
	// dialing holds a token while a dial runs, so callers of one host wait
	// for one dial (as long as their context lets them) instead of each
	// dialing, and callers of other hosts do not wait at all.
	dialing  chan struct{}
	mu       sync.Mutex
	c        *conn
	failures int
	retryAt  time.Time
	lastErr  error
}

// conn is one open connection to a host.
type conn struct {
	c *golibvirt.Connect
	// abandoned counts calls on c whose callers gave up while libvirt still
	// runs them.
	abandoned atomic.Int32
}

// NewConnector returns a Connector that dials with libvirt.NewConnect the URIs
// rules allow.
func NewConnector(rules URIRules) *Connector {
	startEventLoop()
	return &Connector{
		Dial:         golibvirt.NewConnect,
		MinBackoff:   500 * time.Millisecond,
		MaxBackoff:   30 * time.Second,
		Rules:        rules,
		Timeouts:     Timeouts{Dial: 30 * time.Second, Call: 30 * time.Second, Long: 10 * time.Minute},
		MaxAbandoned: 8,
		hosts:        map[string]*host{},
	}
}

var _ provider.Connector = (*Connector)(nil)

// Hypervisor returns the hypervisor at uri, connecting if needed. While the
// backoff after a failed try runs, it fails fast with provider.ErrUnreachable.
func (p *Connector) Hypervisor(ctx context.Context, uri string) (provider.Hypervisor, error) {
	if err := p.Rules.Check(uri); err != nil {
		return nil, fmt.Errorf("%w: %w", provider.ErrUnreachable, err)
	}
	st := p.host(uri)
	c, err := p.connect(ctx, uri, st)
	if err != nil {
		return nil, err
	}
	return &hypervisor{uri: uri, conn: c.c, live: c, pool: p, host: st}, nil
}

func (p *Connector) host(uri string) *host {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.hosts[uri]
	if st == nil {
		st = &host{dialing: make(chan struct{}, 1)}
		p.hosts[uri] = st
	}
	return st
}

func (p *Connector) connect(ctx context.Context, uri string, st *host) (*conn, error) {
	if c := st.current(); c != nil {
		return c, nil
	}
	select {
	case st.dialing <- struct{}{}:
		defer func() { <-st.dialing }()
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %s: still connecting: %v", provider.ErrUnreachable, uri, ctx.Err())
	}
	st.mu.Lock()
	c, retryAt, lastErr := st.c, st.retryAt, st.lastErr
	st.mu.Unlock()
	if c != nil {
		return c, nil // another caller's dial finished while this one waited
	}
	if now := time.Now(); now.Before(retryAt) {
		return nil, fmt.Errorf("%w: %s: %v (next try in %s)", provider.ErrUnreachable, uri, lastErr, retryAt.Sub(now).Round(time.Millisecond))
	}
	lc, err := p.dial(ctx, uri)
	st.mu.Lock()
	defer st.mu.Unlock()
	if err != nil {
		st.failures++
		backoff := p.MinBackoff << min(st.failures-1, 16)
		if backoff > p.MaxBackoff || backoff <= 0 {
			backoff = p.MaxBackoff
		}
		st.retryAt, st.lastErr = time.Now().Add(backoff), err
		return nil, fmt.Errorf("%w: %s: %v", provider.ErrUnreachable, uri, err)
	}
	// Remote connections get keepalive so a dead peer is noticed in seconds
	// (and IsAlive says so); local drivers (test://, qemu:///) do not support
	// it and need none.
	_ = lc.SetKeepAlive(5, 3)
	st.c, st.failures, st.lastErr = &conn{c: lc}, 0, nil
	return st.c, nil
}

// dial opens a connection within the dial timeout. A dial given up on closes
// its connection when it arrives, rather than leaking it.
func (p *Connector) dial(ctx context.Context, uri string) (*golibvirt.Connect, error) {
	ctx, cancel := withDefaultTimeout(ctx, p.Timeouts.Dial)
	defer cancel()
	type result struct {
		c   *golibvirt.Connect
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := p.Dial(uri)
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		return r.c, r.err
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.c != nil {
				_, _ = r.c.Close()
			}
		}()
		return nil, fmt.Errorf("connecting: %w", ctx.Err())
	}
}

func (st *host) current() *conn {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.c
}

// drop forgets a broken connection so the next call reconnects. Closing it
// also ends the calls still waiting on it.
func (st *host) drop(c *conn) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.c == c {
		st.c = nil
		go c.c.Close()
	}
}

// close closes the connection; with retry the next call dials at once.
func (st *host) close() {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.c != nil {
		_, _ = st.c.c.Close()
		st.c = nil
		st.retryAt = time.Time{}
	}
}

func (p *Connector) each(f func(*host)) {
	p.mu.Lock()
	hosts := make([]*host, 0, len(p.hosts))
	for _, st := range p.hosts {
		hosts = append(hosts, st)
	}
	p.mu.Unlock()
	for _, st := range hosts {
		f(st)
	}
}

// Disconnect closes the connection to uri (the next call reconnects).
func (p *Connector) Disconnect(uri string) {
	p.mu.Lock()
	st := p.hosts[uri]
	p.mu.Unlock()
	if st != nil {
		st.close()
	}
}

// Close closes every connection.
func (p *Connector) Close() { p.each((*host).close) }

func withDefaultTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok || d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// errAbandoned marks a call its caller stopped waiting for; libvirt may still
// finish it.
var errAbandoned = errors.New("libvirt call abandoned")

// callValue runs a blocking libvirt call on h and gives up waiting for it
// when ctx ends or timeout passes (unless ctx ends sooner). libvirt calls
// cannot be cancelled: the call goes on, counted against h's abandoned calls
// until it returns.
func callValue[T any](ctx context.Context, h *hypervisor, timeout time.Duration, f func() (T, error)) (T, error) {
	var zero T
	if n := h.live.abandoned.Load(); h.pool.MaxAbandoned > 0 && int(n) >= h.pool.MaxAbandoned {
		// The connection is wedged (a libvirtd worker, or a guest's QEMU
		// monitor, that never answers): a new one gets fresh workers, and
		// closing this one ends the calls still waiting on it.
		h.host.drop(h.live)
		return zero, fmt.Errorf("%w: %d calls to %s are still unanswered; reconnecting", provider.ErrUnreachable, n, h.uri)
	}
	ctx, cancel := withDefaultTimeout(ctx, timeout)
	defer cancel()
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	// state goes from running to done (the call returned first) or to
	// abandoned (the caller gave up first), once.
	const running, done, abandoned = 0, 1, 2
	var state atomic.Int32
	go func() {
		v, err := f()
		if !state.CompareAndSwap(running, done) {
			h.live.abandoned.Add(-1)
		}
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		h.live.abandoned.Add(1)
		if !state.CompareAndSwap(running, abandoned) {
			h.live.abandoned.Add(-1)
			r := <-ch
			return r.v, r.err
		}
		return zero, fmt.Errorf("%w: %w", errAbandoned, ctx.Err())
	}
}

func call(ctx context.Context, h *hypervisor, timeout time.Duration, f func() error) error {
	_, err := callValue(ctx, h, timeout, func() (struct{}, error) { return struct{}{}, f() })
	return err
}

func errCode(err error) golibvirt.ErrorNumber {
	var lerr golibvirt.Error
	if errors.As(err, &lerr) {
		return lerr.Code
	}
	return golibvirt.ERR_OK
}

// isConnectionError tells a broken connection from an error about the request.
// Codes such as VIR_ERR_SYSTEM_ERROR cover both a dropped socket and a file
// QEMU could not open, so the connection itself is asked whether it lives.
func isConnectionError(c *golibvirt.Connect, err error) bool {
	switch errCode(err) {
	case golibvirt.ERR_NO_CONNECT, golibvirt.ERR_INVALID_CONN:
		return true
	}
	// A call that took too long says nothing about the connection: a big
	// memory snapshot may outlast its caller. libvirt knows (keepalive).
	alive, aerr := c.IsAlive()
	return aerr != nil || !alive
}
