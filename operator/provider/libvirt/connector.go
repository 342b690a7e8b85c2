// Package libvirt implements the provider interfaces over libvirt, through
// libvirt.org/go/libvirt (cgo). One connection per hypervisor URI is shared by
// every caller, kept alive, and reopened with backoff when it breaks.
package libvirt

import (
	"context"
	"errors"
	"fmt"
	"sync"
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

// Connector shares one libvirt connection per URI.
type Connector struct {
	// Dial opens a connection; tests replace it to simulate an outage.
	Dial func(uri string) (*golibvirt.Connect, error)
	// MinBackoff and MaxBackoff bound the wait between failed connection tries.
	MinBackoff, MaxBackoff time.Duration

	mu    sync.Mutex
	conns map[string]*conn
}

type conn struct {
	c        *golibvirt.Connect
	failures int
	retryAt  time.Time
	lastErr  error
}

// NewConnector returns a Connector that dials with libvirt.NewConnect.
func NewConnector() *Connector {
	startEventLoop()
	return &Connector{
		Dial:       golibvirt.NewConnect,
		MinBackoff: 500 * time.Millisecond,
		MaxBackoff: 30 * time.Second,
		conns:      map[string]*conn{},
	}
}

var _ provider.Connector = (*Connector)(nil)

// Hypervisor returns the hypervisor at uri, connecting if needed. While the
// backoff after a failed try runs, it fails fast with provider.ErrUnreachable.
func (p *Connector) Hypervisor(ctx context.Context, uri string) (provider.Hypervisor, error) {
	c, err := p.connect(ctx, uri)
	if err != nil {
		return nil, err
	}
	return &hypervisor{uri: uri, conn: c, pool: p}, nil
}

func (p *Connector) connect(ctx context.Context, uri string) (*golibvirt.Connect, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.conns[uri]
	if st == nil {
		st = &conn{}
		p.conns[uri] = st
	}
	if st.c != nil {
		return st.c, nil
	}
	if now := time.Now(); now.Before(st.retryAt) {
		return nil, fmt.Errorf("%w: %s: %v (next try in %s)", provider.ErrUnreachable, uri, st.lastErr, st.retryAt.Sub(now).Round(time.Millisecond))
	}
	c, err := callValue(ctx, func() (*golibvirt.Connect, error) { return p.Dial(uri) })
	if err != nil {
		st.failures++
		backoff := p.MinBackoff << min(st.failures-1, 16)
		if backoff > p.MaxBackoff || backoff <= 0 {
			backoff = p.MaxBackoff
		}
		st.retryAt, st.lastErr = time.Now().Add(backoff), err
		return nil, fmt.Errorf("%w: %s: %v", provider.ErrUnreachable, uri, err)
	}
	// Remote connections get keepalive so a dead peer is noticed in seconds;
	// local drivers (test://, qemu:///) do not support it and need none.
	_ = c.SetKeepAlive(5, 3)
	st.c, st.failures, st.lastErr = c, 0, nil
	return c, nil
}

// drop forgets a broken connection so the next call reconnects.
func (p *Connector) drop(uri string, c *golibvirt.Connect) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if st := p.conns[uri]; st != nil && st.c == c {
		st.c = nil
		go c.Close()
	}
}

// Disconnect closes the connection to uri (the next call reconnects).
func (p *Connector) Disconnect(uri string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if st := p.conns[uri]; st != nil && st.c != nil {
		_, _ = st.c.Close()
		st.c = nil
		st.retryAt = time.Time{}
	}
}

// Close closes every connection.
func (p *Connector) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, st := range p.conns {
		if st.c != nil {
			_, _ = st.c.Close()
			st.c = nil
		}
	}
}

// callValue runs a blocking libvirt call and gives up waiting for it when ctx
// ends. libvirt calls cannot be cancelled, so the call itself may finish later.
func callValue[T any](ctx context.Context, f func() (T, error)) (T, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := f()
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, fmt.Errorf("libvirt call: %w", ctx.Err())
	}
}

func call(ctx context.Context, f func() error) error {
	_, err := callValue(ctx, func() (struct{}, error) { return struct{}{}, f() })
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
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	alive, aerr := c.IsAlive()
	return aerr != nil || !alive
}
