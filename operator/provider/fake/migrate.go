package fake

import (
	"context"
	"fmt"
	"time"

	"github.com/novacron/operator/operator/provider"
)

// CreateSnapshot implements provider.Hypervisor.
func (h *Host) CreateSnapshot(_ context.Context, name string, req provider.SnapshotRequest) (provider.Snapshot, error) {
	var out provider.Snapshot
	err := h.withDomain("CreateSnapshot", name, func(d *domain) error {
		if s, ok := d.snapshots[req.Name]; ok {
			out = s
			return nil
		}
		running := d.state == provider.StateRunning || d.state == provider.StatePaused
		if running && req.DiskOnly {
			// As QEMU: an internal snapshot of a running guest has its memory.
			return fmt.Errorf("disk-only snapshot of running domain %s: %w", name, provider.ErrUnsupported)
		}
		out = provider.Snapshot{Name: req.Name, CreationTime: time.Now(), IncludesMemory: running && !req.DiskOnly, SizeBytes: d.def.MemoryBytes}
		d.snapshots[req.Name] = out
		return nil
	})
	return out, err
}

// RevertSnapshot implements provider.Hypervisor.
func (h *Host) RevertSnapshot(_ context.Context, name, snap string, running bool) error {
	return h.withDomain("RevertSnapshot", name, func(d *domain) error {
		if _, ok := d.snapshots[snap]; !ok {
			return fmt.Errorf("snapshot %s of %s: %w", snap, name, provider.ErrNotFound)
		}
		d.state = provider.StateShutoff
		if running {
			d.state = provider.StateRunning
		}
		return nil
	})
}

// DeleteSnapshot implements provider.Hypervisor.
func (h *Host) DeleteSnapshot(_ context.Context, name, snap string) error {
	if err := h.enter("DeleteSnapshot"); err != nil {
		return err
	}
	defer h.mu.Unlock()
	if d := h.domains[name]; d != nil {
		delete(d.snapshots, snap)
	}
	return nil
}

// Snapshots implements provider.Hypervisor.
func (h *Host) Snapshots(_ context.Context, name string) ([]string, error) {
	var out []string
	err := h.withDomain("Snapshots", name, func(d *domain) error {
		for n := range d.snapshots {
			out = append(out, n)
		}
		return nil
	})
	return out, err
}

// Migrate implements provider.Hypervisor: the running domain moves to the
// host at o.DestURI, after a hold (HoldMigrations) if there is one. On
// failure the domain still runs here.
func (h *Host) Migrate(ctx context.Context, name string, o provider.MigrateOptions) error {
	var aborted chan struct{}
	var hold chan struct{}
	err := h.withDomain("Migrate", name, func(d *domain) error {
		if d.state != provider.StateRunning {
			return fmt.Errorf("domain %s is not running", name)
		}
		d.migrating = make(chan struct{})
		aborted, hold = d.migrating, h.hold
		return nil
	})
	if err != nil {
		return err
	}
	defer h.endMigration(name, aborted)
	if hold != nil {
		select {
		case <-hold:
		case <-aborted:
			return fmt.Errorf("migration of %s aborted", name)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	dest := h.c.Host(o.DestURI)
	if dest.isDown() {
		return fmt.Errorf("%w: %s is down", provider.ErrUnreachable, o.DestURI)
	}
	h.mu.Lock()
	d := h.domains[name]
	delete(h.domains, name)
	h.mu.Unlock()
	if d == nil {
		return fmt.Errorf("domain %s: %w", name, provider.ErrNotFound)
	}
	dest.mu.Lock()
	dest.domains[name] = &domain{def: d.def, state: provider.StateRunning, started: d.started, snapshots: map[string]provider.Snapshot{},
		migrated: &provider.MigrationProgress{Completed: true, DataTotal: d.def.MemoryBytes, DataProcessed: d.def.MemoryBytes, Downtime: 10 * time.Millisecond}}
	dest.mu.Unlock()
	return nil
}

func (h *Host) endMigration(name string, aborted chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if d := h.domains[name]; d != nil && d.migrating == aborted {
		d.migrating = nil
	}
}

// MigrationProgress implements provider.Hypervisor: a held migration is in
// progress on its source; the host a domain arrived on reports the completed
// one's figures.
func (h *Host) MigrationProgress(_ context.Context, name string) (provider.MigrationProgress, error) {
	var p provider.MigrationProgress
	err := h.withDomain("MigrationProgress", name, func(d *domain) error {
		switch {
		case d.migrating != nil:
			p = provider.MigrationProgress{DataTotal: d.def.MemoryBytes, DataRemaining: d.def.MemoryBytes / 2, DataProcessed: d.def.MemoryBytes / 2, Iterations: 1}
		case d.migrated != nil:
			p = *d.migrated
		default:
			return fmt.Errorf("domain %s has no migration job: %w", name, provider.ErrNotFound)
		}
		return nil
	})
	return p, err
}

// AbortMigration implements provider.Hypervisor.
func (h *Host) AbortMigration(_ context.Context, name string) error {
	if err := h.enter("AbortMigration"); err != nil {
		return err
	}
	defer h.mu.Unlock()
	if d := h.domains[name]; d != nil && d.migrating != nil {
		close(d.migrating)
		d.migrating = nil
	}
	return nil
}
