package libvirt

import (
	"context"
	"errors"
	"fmt"
	"time"

	golibvirt "libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/novacron/operator/operator/provider"
)

// CreateSnapshot takes an internal snapshot: every qcow2 disk keeps the
// snapshot inside itself, and a running domain's memory state is saved with
// it, so a revert resumes the guest where it was. Internal snapshots cannot
// leave the memory out of a running domain in QEMU, so DiskOnly on a running
// domain is refused rather than silently taking something else.
func (h *hypervisor) CreateSnapshot(ctx context.Context, domain string, req provider.SnapshotRequest) (provider.Snapshot, error) {
	var out provider.Snapshot
	err := h.withDomainFor(ctx, h.pool.Timeouts.Long, domain, "snapshotting", func(dom *golibvirt.Domain) error {
		if snap, err := dom.SnapshotLookupByName(req.Name, 0); err == nil {
			defer snap.Free()
			out, err = describeSnapshot(snap)
			return err
		}
		active, err := dom.IsActive()
		if err != nil {
			return err
		}
		if active && req.DiskOnly {
			return fmt.Errorf("%w: a disk-only snapshot of a running VM (internal qcow2 snapshots of a running guest always include its memory); stop the VM first or leave diskOnly unset", provider.ErrUnsupported)
		}
		quiesced := false
		if active && req.Quiesce {
			// Best effort: with no guest agent the snapshot is crash-consistent
			// (and, with its memory state, still resumes exactly).
			if err := dom.FSFreeze(nil, 0); err == nil {
				quiesced = true
				defer func() { _ = dom.FSThaw(nil, 0) }()
			}
		}
		x := libvirtxml.DomainSnapshot{Name: req.Name, Description: req.Description}
		doc, err := x.Marshal()
		if err != nil {
			return err
		}
		snap, err := dom.CreateSnapshotXML(doc, golibvirt.DOMAIN_SNAPSHOT_CREATE_ATOMIC)
		if err != nil {
			return err
		}
		defer snap.Free()
		out, err = describeSnapshot(snap)
		out.Quiesced = quiesced
		return err
	})
	return out, err
}

// describeSnapshot reads what a snapshot holds from its definition.
func describeSnapshot(snap *golibvirt.DomainSnapshot) (provider.Snapshot, error) {
	doc, err := snap.GetXMLDesc(0)
	if err != nil {
		return provider.Snapshot{}, err
	}
	var x libvirtxml.DomainSnapshot
	if err := x.Unmarshal(doc); err != nil {
		return provider.Snapshot{}, err
	}
	s := provider.Snapshot{Name: x.Name}
	var created int64
	if _, err := fmt.Sscan(x.CreationTime, &created); err == nil {
		s.CreationTime = time.Unix(created, 0)
	}
	// A snapshot of a running domain carries its memory: as much as the
	// guest has, which is what the disk image grows by.
	if x.State == "running" || x.State == "paused" {
		s.IncludesMemory = true
		if x.Domain != nil && x.Domain.Memory != nil {
			s.SizeBytes = int64(x.Domain.Memory.Value) * unitBytes(x.Domain.Memory.Unit)
		}
	}
	return s, nil
}

func unitBytes(unit string) int64 {
	switch unit {
	case "b", "bytes":
		return 1
	case "M", "MiB":
		return 1 << 20
	case "G", "GiB":
		return 1 << 30
	}
	return 1 << 10 // libvirt's default, KiB
}

func (h *hypervisor) RevertSnapshot(ctx context.Context, domain, snapshot string, running bool) error {
	return h.withDomainFor(ctx, h.pool.Timeouts.Long, domain, "reverting", func(dom *golibvirt.Domain) error {
		snap, err := dom.SnapshotLookupByName(snapshot, 0)
		if err != nil {
			return err
		}
		defer snap.Free()
		// FORCE: reverting a running guest to another running state is what
		// was asked; libvirt wants it said explicitly.
		if running {
			return snap.RevertToSnapshot(golibvirt.DOMAIN_SNAPSHOT_REVERT_RUNNING | golibvirt.DOMAIN_SNAPSHOT_REVERT_FORCE)
		}
		// Left off: the disks go back to the snapshot and a memory state, if
		// any, is dropped (the guest boots from those disks when started).
		if err := snap.RevertToSnapshot(golibvirt.DOMAIN_SNAPSHOT_REVERT_PAUSED | golibvirt.DOMAIN_SNAPSHOT_REVERT_FORCE); err != nil {
			return err
		}
		if active, err := dom.IsActive(); err != nil || !active {
			return err
		}
		return dom.Destroy()
	})
}

func (h *hypervisor) DeleteSnapshot(ctx context.Context, domain, snapshot string) error {
	err := h.withDomain(ctx, domain, "deleting snapshot "+snapshot+" of", func(dom *golibvirt.Domain) error {
		snap, err := dom.SnapshotLookupByName(snapshot, 0)
		if err != nil {
			return err
		}
		defer snap.Free()
		return snap.Delete(0)
	})
	if errors.Is(err, provider.ErrNotFound) {
		return nil
	}
	return err
}

func (h *hypervisor) Thaw(ctx context.Context, domain string) error {
	err := h.withDomain(ctx, domain, "thawing the file systems of", func(dom *golibvirt.Domain) error {
		if active, err := dom.IsActive(); err != nil || !active {
			return err
		}
		err := dom.FSThaw(nil, 0)
		switch errCode(err) {
		case golibvirt.ERR_ARGUMENT_UNSUPPORTED, golibvirt.ERR_AGENT_UNRESPONSIVE, golibvirt.ERR_NO_SUPPORT, golibvirt.ERR_OPERATION_UNSUPPORTED:
			return nil // no agent: nothing was frozen through it
		}
		return err
	})
	if errors.Is(err, provider.ErrNotFound) {
		return nil
	}
	return err
}

func (h *hypervisor) Snapshots(ctx context.Context, domain string) ([]string, error) {
	var names []string
	err := h.withDomain(ctx, domain, "listing snapshots of", func(dom *golibvirt.Domain) error {
		var err error
		names, err = dom.SnapshotListNames(0)
		return err
	})
	return names, err
}
