package testenv

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/novacron/operator/operator/provider"
)

// Outages takes simulated nodes' hypervisors away and brings them back, as a
// node whose libvirtd dies and restarts, without losing the simulated host's
// state. A test's Connector asks Check before handing out a hypervisor and
// hands it out through Wrap, so a node that is down refuses new connections
// and a hypervisor handed out before it went down fails every call, as a
// cached libvirt connection to a dead daemon does.
type Outages struct {
	down sync.Map // uri -> bool
}

// SetDown takes the hypervisor at uri away (true) or brings it back.
func (o *Outages) SetDown(uri string, down bool) { o.down.Store(uri, down) }

// Check returns provider.ErrUnreachable while the hypervisor at uri is down.
func (o *Outages) Check(uri string) error {
	if v, ok := o.down.Load(uri); ok && v.(bool) {
		return fmt.Errorf("%w: %s: connection refused (simulated outage)", provider.ErrUnreachable, uri)
	}
	return nil
}

// Wrap returns h, the hypervisor at uri, failing every call while it is down.
func (o *Outages) Wrap(uri string, h provider.Hypervisor) provider.Hypervisor {
	return &outageHypervisor{h: h, uri: uri, o: o}
}

type outageHypervisor struct {
	h   provider.Hypervisor
	uri string
	o   *Outages
}

var _ provider.Hypervisor = (*outageHypervisor)(nil)

// do runs f unless the hypervisor is down.
func do[T any](h *outageHypervisor, f func() (T, error)) (T, error) {
	if err := h.o.Check(h.uri); err != nil {
		var zero T
		return zero, err
	}
	return f()
}

func do0(h *outageHypervisor, f func() error) error {
	_, err := do(h, func() (struct{}, error) { return struct{}{}, f() })
	return err
}

func (h *outageHypervisor) Info(ctx context.Context) (provider.HostInfo, error) {
	return do(h, func() (provider.HostInfo, error) { return h.h.Info(ctx) })
}

func (h *outageHypervisor) EnsureVolume(ctx context.Context, v provider.Volume) (string, error) {
	return do(h, func() (string, error) { return h.h.EnsureVolume(ctx, v) })
}

func (h *outageHypervisor) UploadVolume(ctx context.Context, pool, name string, data []byte) (string, error) {
	return do(h, func() (string, error) { return h.h.UploadVolume(ctx, pool, name, data) })
}

func (h *outageHypervisor) DeleteVolume(ctx context.Context, pool, name string) error {
	return do0(h, func() error { return h.h.DeleteVolume(ctx, pool, name) })
}

func (h *outageHypervisor) VolumePath(ctx context.Context, pool, name string) (string, error) {
	return do(h, func() (string, error) { return h.h.VolumePath(ctx, pool, name) })
}

func (h *outageHypervisor) Define(ctx context.Context, d provider.Domain) error {
	return do0(h, func() error { return h.h.Define(ctx, d) })
}

func (h *outageHypervisor) Start(ctx context.Context, name string) error {
	return do0(h, func() error { return h.h.Start(ctx, name) })
}

func (h *outageHypervisor) Shutdown(ctx context.Context, name string, grace time.Duration) error {
	return do0(h, func() error { return h.h.Shutdown(ctx, name, grace) })
}

func (h *outageHypervisor) Undefine(ctx context.Context, name string) error {
	return do0(h, func() error { return h.h.Undefine(ctx, name) })
}

func (h *outageHypervisor) Domains(ctx context.Context) ([]string, error) {
	return do(h, func() ([]string, error) { return h.h.Domains(ctx) })
}

func (h *outageHypervisor) Thaw(ctx context.Context, name string) error {
	_, err := do(h, func() (struct{}, error) { return struct{}{}, h.h.Thaw(ctx, name) })
	return err
}

func (h *outageHypervisor) UUID(ctx context.Context, name string) (string, error) {
	return do(h, func() (string, error) { return h.h.UUID(ctx, name) })
}

func (h *outageHypervisor) State(ctx context.Context, name string) (provider.DomainState, error) {
	return do(h, func() (provider.DomainState, error) { return h.h.State(ctx, name) })
}

func (h *outageHypervisor) Stats(ctx context.Context, name string) (provider.Stats, error) {
	return do(h, func() (provider.Stats, error) { return h.h.Stats(ctx, name) })
}

func (h *outageHypervisor) CreateSnapshot(ctx context.Context, domain string, req provider.SnapshotRequest) (provider.Snapshot, error) {
	return do(h, func() (provider.Snapshot, error) { return h.h.CreateSnapshot(ctx, domain, req) })
}

func (h *outageHypervisor) RevertSnapshot(ctx context.Context, domain, snapshot string, running bool) error {
	return do0(h, func() error { return h.h.RevertSnapshot(ctx, domain, snapshot, running) })
}

func (h *outageHypervisor) DeleteSnapshot(ctx context.Context, domain, snapshot string) error {
	return do0(h, func() error { return h.h.DeleteSnapshot(ctx, domain, snapshot) })
}

func (h *outageHypervisor) Snapshots(ctx context.Context, domain string) ([]string, error) {
	return do(h, func() ([]string, error) { return h.h.Snapshots(ctx, domain) })
}

func (h *outageHypervisor) Migrate(ctx context.Context, domain string, o provider.MigrateOptions) error {
	return do0(h, func() error { return h.h.Migrate(ctx, domain, o) })
}

func (h *outageHypervisor) MigrationProgress(ctx context.Context, domain string) (provider.MigrationProgress, error) {
	return do(h, func() (provider.MigrationProgress, error) { return h.h.MigrationProgress(ctx, domain) })
}

func (h *outageHypervisor) AbortMigration(ctx context.Context, domain string) error {
	return do0(h, func() error { return h.h.AbortMigration(ctx, domain) })
}
