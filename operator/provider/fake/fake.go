// Package fake is an in-memory provider for unit tests: hosts named by URI,
// each with its storage pools, domains and their snapshots, and a live
// migration that moves a running domain to the destination host as libvirt's
// peer-to-peer migration does (defined there, undefined here). Tests take a
// host down, make calls fail, hold migrations, set a domain's state the way a
// guest would (a crash, a power-off), and count the calls made.
//
// It follows the provider.Hypervisor contract: every call is idempotent, a
// missing domain or volume is provider.ErrNotFound, a same-named domain of
// another UUID is provider.ErrConflict, a host that is down is
// provider.ErrUnreachable.
package fake

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/novacron/operator/operator/provider"
)

// Connector hands out the in-memory hosts. The zero value is not usable; use
// NewConnector.
type Connector struct {
	mu    sync.Mutex
	hosts map[string]*Host
}

// NewConnector makes a connector with no hosts yet.
func NewConnector() *Connector { return &Connector{hosts: map[string]*Host{}} }

// Host is the host at uri, made (8 CPUs, 32 GiB, an empty pool "default")
// the first time it is named.
func (c *Connector) Host(uri string) *Host {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.hosts[uri]
	if h == nil {
		h = &Host{uri: uri, c: c, info: provider.HostInfo{CPUs: 8, MemoryBytes: 32 << 30, CPUModel: "Icelake-Server", NUMANodes: 1, Version: "fake"},
			pools: map[string]map[string]volume{"default": {}}, domains: map[string]*domain{}, calls: map[string]int{}, fail: map[string]error{}, crash: map[string]bool{}}
		c.hosts[uri] = h
	}
	return h
}

// Hypervisor implements provider.Connector.
func (c *Connector) Hypervisor(_ context.Context, uri string) (provider.Hypervisor, error) {
	h := c.Host(uri)
	if h.isDown() {
		return nil, fmt.Errorf("%w: %s is down", provider.ErrUnreachable, uri)
	}
	return h, nil
}

// Host is one in-memory hypervisor.
type Host struct {
	uri string
	c   *Connector

	mu      sync.Mutex
	info    provider.HostInfo
	down    bool
	uploads bool
	pools   map[string]map[string]volume
	free    map[string]int64 // a pool's free bytes; unset: unlimited
	domains map[string]*domain
	calls   map[string]int
	fail    map[string]error
	crash   map[string]bool
	hold    chan struct{}
}

type volume struct {
	provider.Volume
	data []byte
}

type domain struct {
	def       provider.Domain
	state     provider.DomainState
	started   time.Time
	snapshots map[string]provider.Snapshot
	// migrated holds the final figures of the migration that brought it here.
	migrated *provider.MigrationProgress
	// migrating is closed when its outgoing migration is aborted.
	migrating chan struct{}
}

// SetPoolFree sets how many bytes pool has free for new volumes.
func (h *Host) SetPoolFree(pool string, bytes int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.free == nil {
		h.free = map[string]int64{}
	}
	h.free[pool] = bytes
}

// SetDown takes the host down (every call fails ErrUnreachable) or up.
func (h *Host) SetDown(down bool) { h.mu.Lock(); h.down = down; h.mu.Unlock() }

// AcceptUploads makes UploadVolume work (by default it is unsupported, as on
// libvirt's test driver).
func (h *Host) AcceptUploads() { h.mu.Lock(); h.uploads = true; h.mu.Unlock() }

// AddVolume stages a volume (an image) in a pool.
func (h *Host) AddVolume(pool, name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.pools[pool] == nil {
		h.pools[pool] = map[string]volume{}
	}
	h.pools[pool][name] = volume{Volume: provider.Volume{Pool: pool, Name: name, Format: "qcow2"}}
}

// FailNext makes the next call of method (Define, Start, Migrate, ...) fail
// with err.
func (h *Host) FailNext(method string, err error) { h.mu.Lock(); h.fail[method] = err; h.mu.Unlock() }

// CrashOn makes the next call of method panic before it does anything: the
// operator dying at that line. Tests recover and look at what was recorded.
func (h *Host) CrashOn(method string) { h.mu.Lock(); h.crash[method] = true; h.mu.Unlock() }

// Crash is the value a CrashOn call panics with.
type Crash struct{ Method string }

// HoldMigrations makes outgoing migrations wait, in progress, until release
// (or an abort, or their context's end).
func (h *Host) HoldMigrations() (release func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch := make(chan struct{})
	h.hold = ch
	return func() {
		h.mu.Lock()
		if h.hold == ch {
			h.hold = nil
		}
		h.mu.Unlock()
		close(ch)
	}
}

// SetState puts a domain in a state, as its guest would (crash, power off).
func (h *Host) SetState(name string, st provider.DomainState) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if d := h.domains[name]; d != nil {
		d.state = st
	}
}

// Domain is a domain's definition and state, ok false when it is not there.
func (h *Host) Domain(name string) (provider.Domain, provider.DomainState, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	d := h.domains[name]
	if d == nil {
		return provider.Domain{}, "", false
	}
	return d.def, d.state, true
}

// HasVolume says whether the pool holds the volume.
func (h *Host) HasVolume(pool, name string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.pools[pool][name]
	return ok
}

// Calls is how often each method was called.
func (h *Host) Calls() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]int{}
	for k, v := range h.calls {
		out[k] = v
	}
	return out
}

func (h *Host) isDown() bool { h.mu.Lock(); defer h.mu.Unlock(); return h.down }

// enter counts a call of method and locks the host for it. On an error (the
// host is down, or FailNext) the host is left unlocked and the call fails
// with it; otherwise the caller unlocks h.mu when done.
func (h *Host) enter(method string) error {
	h.mu.Lock()
	if h.crash[method] {
		delete(h.crash, method)
		h.mu.Unlock()
		panic(Crash{Method: method})
	}
	h.calls[method]++
	if h.down {
		h.mu.Unlock()
		return fmt.Errorf("%w: %s is down", provider.ErrUnreachable, h.uri)
	}
	if err := h.fail[method]; err != nil {
		delete(h.fail, method)
		h.mu.Unlock()
		return err
	}
	return nil
}

func path(pool, name string) string { return "/var/lib/fake/" + pool + "/" + name }

// Info implements provider.Hypervisor.
func (h *Host) Info(context.Context) (provider.HostInfo, error) {
	if err := h.enter("Info"); err != nil {
		return provider.HostInfo{}, err
	}
	defer h.mu.Unlock()
	return h.info, nil
}

// EnsureVolume implements provider.Hypervisor.
func (h *Host) EnsureVolume(_ context.Context, v provider.Volume) (string, error) {
	if err := h.enter("EnsureVolume"); err != nil {
		return "", err
	}
	defer h.mu.Unlock()
	pool, ok := h.pools[v.Pool]
	if !ok {
		return "", fmt.Errorf("storage pool %q does not exist on the hypervisor", v.Pool)
	}
	if _, ok := pool[v.Name]; ok {
		return path(v.Pool, v.Name), nil
	}
	if v.BackingVolume != "" {
		if _, ok := pool[v.BackingVolume]; !ok {
			return "", fmt.Errorf("image volume %q is not in storage pool %q", v.BackingVolume, v.Pool)
		}
	}
	if free, ok := h.free[v.Pool]; ok && free < v.CapacityBytes {
		return "", fmt.Errorf("%w: volume %s needs %d bytes, pool %s has %d free", provider.ErrNoSpace, v.Name, v.CapacityBytes, v.Pool, free)
	}
	pool[v.Name] = volume{Volume: v}
	return path(v.Pool, v.Name), nil
}

// UploadVolume implements provider.Hypervisor.
func (h *Host) UploadVolume(_ context.Context, pool, name string, data []byte) (string, error) {
	if err := h.enter("UploadVolume"); err != nil {
		return "", err
	}
	defer h.mu.Unlock()
	if !h.uploads {
		return "", fmt.Errorf("upload of %s: %w", name, provider.ErrUnsupported)
	}
	p, ok := h.pools[pool]
	if !ok {
		return "", fmt.Errorf("storage pool %q does not exist on the hypervisor", pool)
	}
	p[name] = volume{Volume: provider.Volume{Pool: pool, Name: name, Format: "raw", CapacityBytes: int64(len(data))}, data: data}
	return path(pool, name), nil
}

// DeleteVolume implements provider.Hypervisor.
func (h *Host) DeleteVolume(_ context.Context, pool, name string) error {
	if err := h.enter("DeleteVolume"); err != nil {
		return err
	}
	defer h.mu.Unlock()
	delete(h.pools[pool], name)
	return nil
}

// VolumePath implements provider.Hypervisor.
func (h *Host) VolumePath(_ context.Context, pool, name string) (string, error) {
	if err := h.enter("VolumePath"); err != nil {
		return "", err
	}
	defer h.mu.Unlock()
	if _, ok := h.pools[pool][name]; !ok {
		return "", fmt.Errorf("volume %s/%s: %w", pool, name, provider.ErrNotFound)
	}
	return path(pool, name), nil
}

// Define implements provider.Hypervisor.
func (h *Host) Define(_ context.Context, d provider.Domain) error {
	if err := h.enter("Define"); err != nil {
		return err
	}
	defer h.mu.Unlock()
	if old := h.domains[d.Name]; old != nil {
		if old.def.UUID != d.UUID {
			return fmt.Errorf("domain %s has UUID %s, not %s: %w", d.Name, old.def.UUID, d.UUID, provider.ErrConflict)
		}
		old.def = d
		return nil
	}
	h.domains[d.Name] = &domain{def: d, state: provider.StateShutoff, snapshots: map[string]provider.Snapshot{}}
	return nil
}

// withDomain runs f on a domain under the lock, or says it is not there.
func (h *Host) withDomain(method, name string, f func(*domain) error) error {
	if err := h.enter(method); err != nil {
		return err
	}
	defer h.mu.Unlock()
	d := h.domains[name]
	if d == nil {
		return fmt.Errorf("domain %s: %w", name, provider.ErrNotFound)
	}
	return f(d)
}

// Start implements provider.Hypervisor.
func (h *Host) Start(_ context.Context, name string) error {
	return h.withDomain("Start", name, func(d *domain) error {
		if d.state != provider.StateRunning {
			d.state, d.started = provider.StateRunning, time.Now()
		}
		return nil
	})
}

// Shutdown implements provider.Hypervisor: the guest powers off at once.
func (h *Host) Shutdown(_ context.Context, name string, _ time.Duration) error {
	return h.withDomain("Shutdown", name, func(d *domain) error {
		d.state = provider.StateShutoff
		return nil
	})
}

// Undefine implements provider.Hypervisor.
func (h *Host) Undefine(_ context.Context, name string) error {
	if err := h.enter("Undefine"); err != nil {
		return err
	}
	defer h.mu.Unlock()
	delete(h.domains, name)
	return nil
}

// Domains implements provider.Hypervisor.
func (h *Host) Domains(context.Context) ([]string, error) {
	if err := h.enter("Domains"); err != nil {
		return nil, err
	}
	defer h.mu.Unlock()
	names := make([]string, 0, len(h.domains))
	for n := range h.domains {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// State implements provider.Hypervisor.
func (h *Host) State(_ context.Context, name string) (provider.DomainState, error) {
	var st provider.DomainState
	err := h.withDomain("State", name, func(d *domain) error { st = d.state; return nil })
	return st, err
}

// Thaw implements provider.Hypervisor (counted in Calls).
func (h *Host) Thaw(_ context.Context, name string) error {
	err := h.withDomain("Thaw", name, func(*domain) error { return nil })
	if errors.Is(err, provider.ErrNotFound) {
		return nil
	}
	return err
}

// UUID implements provider.Hypervisor.
func (h *Host) UUID(_ context.Context, name string) (string, error) {
	var uuid string
	err := h.withDomain("UUID", name, func(d *domain) error { uuid = d.def.UUID; return nil })
	return uuid, err
}

// Stats implements provider.Hypervisor: CPU time is wall time since start.
func (h *Host) Stats(_ context.Context, name string) (provider.Stats, error) {
	var s provider.Stats
	err := h.withDomain("Stats", name, func(d *domain) error {
		s.MemoryUsedBytes = d.def.MemoryBytes
		if d.state == provider.StateRunning {
			s.CPUTime = time.Since(d.started)
		}
		return nil
	})
	return s, err
}
