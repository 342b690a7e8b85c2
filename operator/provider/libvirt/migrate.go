package libvirt

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	golibvirt "libvirt.org/go/libvirt"

	"github.com/novacron/operator/operator/provider"
)

// Migrate runs a peer-to-peer live migration: this node's libvirtd connects
// to the destination's and drives QEMU's migration itself, so the operator's
// connection only waits. The domain becomes persistent there and is
// undefined here only once the guest runs there; a failed migration leaves it
// running here.
func (h *hypervisor) Migrate(ctx context.Context, domain string, o provider.MigrateOptions) error {
	// The source libvirtd dials the destination URI itself, as root on the
	// node: it passes the same rules as a URI the operator dials.
	if err := h.pool.Rules.Check(o.DestURI); err != nil {
		return fmt.Errorf("migration URI of the target: %w", err)
	}
	flags := golibvirt.MIGRATE_LIVE | golibvirt.MIGRATE_PEER2PEER | golibvirt.MIGRATE_PERSIST_DEST | golibvirt.MIGRATE_UNDEFINE_SOURCE
	if o.Compressed {
		flags |= golibvirt.MIGRATE_COMPRESSED
	}
	if o.Encrypted {
		// libvirt refuses when QEMU's migration TLS is not set up on both
		// nodes, rather than falling back to clear text.
		flags |= golibvirt.MIGRATE_TLS
	}
	if o.AutoConverge {
		flags |= golibvirt.MIGRATE_AUTO_CONVERGE
	}
	if o.PostCopy {
		flags |= golibvirt.MIGRATE_POSTCOPY
	}
	if o.CopyStorage {
		flags |= golibvirt.MIGRATE_NON_SHARED_INC
	}
	params := &golibvirt.DomainMigrateParameters{}
	if o.BandwidthMiBps > 0 {
		params.BandwidthSet, params.Bandwidth = true, o.BandwidthMiBps
	}
	err := h.withDomainFor(ctx, h.pool.Timeouts.Long, domain, "migrating", func(dom *golibvirt.Domain) error {
		if o.MaxDowntime > 0 {
			// Best effort before the job starts; QEMU takes it as the limit.
			_ = dom.MigrateSetMaxDowntime(uint64(o.MaxDowntime/time.Millisecond), 0)
		}
		return dom.MigrateToURI3(o.DestURI, params, flags)
	})
	if err != nil && errCode(err) == golibvirt.ERR_NO_SUPPORT {
		return fmt.Errorf("%w: %v", provider.ErrUnsupported, err)
	}
	if err != nil && o.Encrypted && strings.Contains(strings.ToLower(err.Error()), "tls") {
		return fmt.Errorf("encrypted migration needs QEMU migration TLS (certificates in /etc/pki/qemu) on both nodes; it was refused rather than sent in clear: %w", err)
	}
	return err
}

func (h *hypervisor) MigrationProgress(ctx context.Context, domain string) (provider.MigrationProgress, error) {
	var p provider.MigrationProgress
	err := h.withDomain(ctx, domain, "reading the migration job of", func(dom *golibvirt.Domain) error {
		info, err := dom.GetJobStats(0)
		if err != nil {
			return err
		}
		if info.Type == golibvirt.DOMAIN_JOB_NONE {
			if info, err = dom.GetJobStats(golibvirt.DOMAIN_JOB_STATS_COMPLETED); err != nil {
				return err
			}
			p.Completed = info.Type == golibvirt.DOMAIN_JOB_COMPLETED
		}
		p.DataTotal, p.DataProcessed, p.DataRemaining = int64(info.DataTotal), int64(info.DataProcessed), int64(info.DataRemaining)
		p.DirtyRate, p.Iterations = int64(info.MemDirtyRate), int64(info.MemIteration)
		p.Elapsed = time.Duration(info.TimeElapsed) * time.Millisecond
		p.Downtime = time.Duration(info.Downtime) * time.Millisecond
		return nil
	})
	return p, err
}

func (h *hypervisor) AbortMigration(ctx context.Context, domain string) error {
	err := h.withDomain(ctx, domain, "aborting the migration of", func(dom *golibvirt.Domain) error {
		if err := dom.AbortJob(); err != nil && errCode(err) != golibvirt.ERR_OPERATION_INVALID {
			return err
		}
		return nil
	})
	if errorsIsNotFound(err) {
		return nil
	}
	return err
}

func errorsIsNotFound(err error) bool { return errors.Is(err, provider.ErrNotFound) }
