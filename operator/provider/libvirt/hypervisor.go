package libvirt

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	golibvirt "libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/novacron/operator/operator/provider"
)

// hypervisor is one connection's view of a host.
type hypervisor struct {
	uri  string
	conn *golibvirt.Connect
	live *conn
	pool *Connector
	host *host
}

var _ provider.Hypervisor = (*hypervisor)(nil)

// wrap names the host in an error, maps libvirt's not-found codes to
// provider.ErrNotFound and a broken connection to provider.ErrUnreachable
// (forgetting the connection so the next call reconnects).
func (h *hypervisor) wrap(err error, what string) error {
	if err == nil {
		return nil
	}
	switch errCode(err) {
	case golibvirt.ERR_NO_DOMAIN, golibvirt.ERR_NO_STORAGE_VOL, golibvirt.ERR_NO_DOMAIN_SNAPSHOT:
		return fmt.Errorf("%s on %s: %w: %v", what, h.uri, provider.ErrNotFound, err)
	}
	if isConnectionError(h.conn, err) {
		h.host.drop(h.live)
		return fmt.Errorf("%s on %s: %w: %v", what, h.uri, provider.ErrUnreachable, err)
	}
	return fmt.Errorf("%s on %s: %w", what, h.uri, err)
}

func (h *hypervisor) Info(ctx context.Context) (provider.HostInfo, error) {
	info, err := callValue(ctx, h, h.pool.Timeouts.Call, func() (provider.HostInfo, error) {
		ni, err := h.conn.GetNodeInfo()
		if err != nil {
			return provider.HostInfo{}, err
		}
		out := provider.HostInfo{CPUs: int32(ni.Cpus), MemoryBytes: int64(ni.Memory) * 1024, CPUModel: ni.Model, NUMANodes: int32(ni.Nodes)}
		if v, err := h.conn.GetVersion(); err == nil {
			out.Version = fmt.Sprintf("%d.%d.%d", v/1000000, v/1000%1000, v%1000)
		}
		return out, nil
	})
	return info, h.wrap(err, "reading host info")
}

func (h *hypervisor) storagePool(name string) (*golibvirt.StoragePool, error) {
	p, err := h.conn.LookupStoragePoolByName(name)
	if err != nil {
		if errCode(err) == golibvirt.ERR_NO_STORAGE_POOL {
			return nil, fmt.Errorf("storage pool %q does not exist on the hypervisor; create it or set the Hypervisor's spec.storagePool", name)
		}
		return nil, err
	}
	return p, nil
}

func createVolume(p *golibvirt.StoragePool, x libvirtxml.StorageVolume) (*golibvirt.StorageVol, error) {
	doc, err := x.Marshal()
	if err != nil {
		return nil, err
	}
	return p.StorageVolCreateXML(doc, 0)
}

func (h *hypervisor) VolumePath(ctx context.Context, pool, name string) (string, error) {
	path, err := callValue(ctx, h, h.pool.Timeouts.Call, func() (string, error) {
		p, err := h.storagePool(pool)
		if err != nil {
			return "", err
		}
		defer p.Free()
		v, err := p.LookupStorageVolByName(name)
		if err != nil {
			return "", err
		}
		defer v.Free()
		return v.GetPath()
	})
	return path, h.wrap(err, fmt.Sprintf("looking up volume %s/%s", pool, name))
}

func (h *hypervisor) EnsureVolume(ctx context.Context, vol provider.Volume) (string, error) {
	path, err := callValue(ctx, h, h.pool.Timeouts.Call, func() (string, error) {
		p, err := h.storagePool(vol.Pool)
		if err != nil {
			return "", err
		}
		defer p.Free()
		if v, err := p.LookupStorageVolByName(vol.Name); err == nil {
			defer v.Free()
			return v.GetPath()
		}
		// Thin volumes take space as guests write: one larger than the
		// pool's free space would fill it, and stop every guest on it.
		if info, err := p.GetInfo(); err == nil && info.Available < uint64(vol.CapacityBytes) {
			return "", fmt.Errorf("%w: volume %s needs %s, pool %s has %s free", provider.ErrNoSpace, vol.Name,
				resource.NewQuantity(vol.CapacityBytes, resource.BinarySI), vol.Pool, resource.NewQuantity(int64(info.Available), resource.BinarySI))
		}
		x := libvirtxml.StorageVolume{
			Name:     vol.Name,
			Capacity: &libvirtxml.StorageVolumeSize{Unit: "bytes", Value: uint64(vol.CapacityBytes)},
			// Thin: the disk takes pool space as the guest writes. Without it
			// the pool counts (and some pools reserve) the whole capacity, so a
			// node's pool would refuse VMs long before it is full.
			Allocation: &libvirtxml.StorageVolumeSize{Unit: "bytes", Value: 0},
			Target:     &libvirtxml.StorageVolumeTarget{Format: &libvirtxml.StorageVolumeTargetFormat{Type: vol.Format}},
		}
		if vol.BackingVolume != "" {
			b, err := p.LookupStorageVolByName(vol.BackingVolume)
			if err != nil {
				return "", fmt.Errorf("image volume %q is not in storage pool %q: %w", vol.BackingVolume, vol.Pool, err)
			}
			defer b.Free()
			bpath, err := b.GetPath()
			if err != nil {
				return "", err
			}
			x.BackingStore = &libvirtxml.StorageVolumeBackingStore{Path: bpath, Format: &libvirtxml.StorageVolumeTargetFormat{Type: vol.BackingFormat}}
		}
		v, err := createVolume(p, x)
		if err != nil {
			return "", err
		}
		defer v.Free()
		return v.GetPath()
	})
	return path, h.wrap(err, fmt.Sprintf("creating volume %s/%s", vol.Pool, vol.Name))
}

func (h *hypervisor) UploadVolume(ctx context.Context, pool, name string, data []byte) (string, error) {
	path, err := callValue(ctx, h, h.pool.Timeouts.Long, func() (string, error) {
		p, err := h.storagePool(pool)
		if err != nil {
			return "", err
		}
		defer p.Free()
		if old, err := p.LookupStorageVolByName(name); err == nil {
			derr := old.Delete(0)
			_ = old.Free()
			if derr != nil {
				return "", derr
			}
		}
		x := libvirtxml.StorageVolume{
			Name:     name,
			Capacity: &libvirtxml.StorageVolumeSize{Unit: "bytes", Value: uint64(len(data))},
			Target:   &libvirtxml.StorageVolumeTarget{Format: &libvirtxml.StorageVolumeTargetFormat{Type: "raw"}},
		}
		v, err := createVolume(p, x)
		if err != nil {
			return "", err
		}
		defer v.Free()
		stream, err := h.conn.NewStream(0)
		if err != nil {
			return "", err
		}
		defer stream.Free()
		if err := v.Upload(stream, 0, uint64(len(data)), 0); err != nil {
			_ = v.Delete(0)
			if errCode(err) == golibvirt.ERR_NO_SUPPORT {
				return "", fmt.Errorf("%w: uploading volumes", provider.ErrUnsupported)
			}
			return "", err
		}
		for sent := 0; sent < len(data); {
			n, err := stream.Send(data[sent:])
			if err != nil {
				_ = stream.Abort()
				return "", err
			}
			sent += n
		}
		if err := stream.Finish(); err != nil {
			return "", err
		}
		return v.GetPath()
	})
	return path, h.wrap(err, fmt.Sprintf("uploading volume %s/%s", pool, name))
}

func (h *hypervisor) DeleteVolume(ctx context.Context, pool, name string) error {
	err := call(ctx, h, h.pool.Timeouts.Call, func() error {
		p, err := h.storagePool(pool)
		if err != nil {
			return err
		}
		defer p.Free()
		v, err := p.LookupStorageVolByName(name)
		if err != nil {
			if errCode(err) == golibvirt.ERR_NO_STORAGE_VOL {
				return nil
			}
			return err
		}
		defer v.Free()
		return v.Delete(0)
	})
	return h.wrap(err, fmt.Sprintf("deleting volume %s/%s", pool, name))
}

func (h *hypervisor) Define(ctx context.Context, d provider.Domain) error {
	err := call(ctx, h, h.pool.Timeouts.Call, func() error {
		typ := d.Type
		if typ == "" || strings.HasPrefix(h.uri, "test:") {
			typ = h.domainType()
		}
		doc, err := domainXML(typ, d)
		if err != nil {
			return err
		}
		dom, err := h.conn.DomainDefineXML(doc)
		if err != nil {
			if errCode(err) == golibvirt.ERR_OPERATION_FAILED && strings.Contains(err.Error(), "already exists with uuid") {
				return fmt.Errorf("%w: %v", provider.ErrConflict, err)
			}
			return err
		}
		return dom.Free()
	})
	return h.wrap(err, "defining domain "+d.Name)
}

// domainType is the libvirt domain type the host runs: "test" for the test
// driver, "kvm" where the host has it, otherwise "qemu" (TCG emulation).
func (h *hypervisor) domainType() string {
	uri, err := h.conn.GetURI()
	if err == nil && len(uri) >= 5 && uri[:5] == "test:" {
		return "test"
	}
	caps, err := h.conn.GetCapabilities()
	if err == nil {
		var c libvirtxml.Caps
		if c.Unmarshal(caps) == nil {
			for _, g := range c.Guests {
				for _, dom := range g.Arch.Domains {
					if dom.Type == "kvm" {
						return "kvm"
					}
				}
			}
		}
	}
	return "qemu"
}

func (h *hypervisor) withDomain(ctx context.Context, name, what string, f func(*golibvirt.Domain) error) error {
	return h.withDomainFor(ctx, h.pool.Timeouts.Call, name, what, f)
}

// withDomainFor is withDomain for calls that may take up to timeout.
func (h *hypervisor) withDomainFor(ctx context.Context, timeout time.Duration, name, what string, f func(*golibvirt.Domain) error) error {
	err := call(ctx, h, timeout, func() error {
		dom, err := h.conn.LookupDomainByName(name)
		if err != nil {
			return err
		}
		defer dom.Free()
		return f(dom)
	})
	return h.wrap(err, what+" domain "+name)
}

func (h *hypervisor) Start(ctx context.Context, name string) error {
	return h.withDomain(ctx, name, "starting", func(dom *golibvirt.Domain) error {
		if st, _, err := dom.GetState(); err != nil {
			return err
		} else if st == golibvirt.DOMAIN_PAUSED {
			return dom.Resume()
		}
		if active, err := dom.IsActive(); err != nil || active {
			return err
		}
		return dom.Create()
	})
}

func (h *hypervisor) Shutdown(ctx context.Context, name string, grace time.Duration) error {
	err := h.withDomain(ctx, name, "shutting down", func(dom *golibvirt.Domain) error {
		if active, err := dom.IsActive(); err != nil || !active {
			return err
		}
		return dom.Shutdown()
	})
	if err != nil {
		return err
	}
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := h.State(ctx, name)
		if err != nil {
			return err
		}
		if st == provider.StateShutoff || st == provider.StateCrashed {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			// The guest ignored ACPI: force it off, as a power cut would.
			return h.withDomain(ctx, name, "forcing off", func(dom *golibvirt.Domain) error {
				if err := dom.Destroy(); err != nil && errCode(err) != golibvirt.ERR_OPERATION_INVALID {
					return err
				}
				return nil
			})
		case <-tick.C:
		}
	}
}

func (h *hypervisor) Undefine(ctx context.Context, name string) error {
	err := h.withDomain(ctx, name, "undefining", func(dom *golibvirt.Domain) error {
		if active, err := dom.IsActive(); err != nil {
			return err
		} else if active {
			if err := dom.Destroy(); err != nil {
				return err
			}
		}
		return dom.UndefineFlags(golibvirt.DOMAIN_UNDEFINE_MANAGED_SAVE | golibvirt.DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
	})
	if errors.Is(err, provider.ErrNotFound) {
		return nil
	}
	return err
}

func (h *hypervisor) Domains(ctx context.Context) ([]string, error) {
	names, err := callValue(ctx, h, h.pool.Timeouts.Call, func() ([]string, error) {
		doms, err := h.conn.ListAllDomains(0)
		if err != nil {
			return nil, err
		}
		out := make([]string, 0, len(doms))
		for i := range doms {
			if n, err := doms[i].GetName(); err == nil {
				out = append(out, n)
			}
			_ = doms[i].Free()
		}
		return out, nil
	})
	return names, h.wrap(err, "listing domains")
}

func (h *hypervisor) State(ctx context.Context, name string) (provider.DomainState, error) {
	var st provider.DomainState
	err := h.withDomain(ctx, name, "reading state of", func(dom *golibvirt.Domain) error {
		s, _, err := dom.GetState()
		if err != nil {
			return err
		}
		st = mapState(s)
		return nil
	})
	return st, err
}

func (h *hypervisor) UUID(ctx context.Context, name string) (string, error) {
	var uuid string
	err := h.withDomain(ctx, name, "reading the UUID of", func(dom *golibvirt.Domain) error {
		var err error
		uuid, err = dom.GetUUIDString()
		return err
	})
	return uuid, err
}

func mapState(s golibvirt.DomainState) provider.DomainState {
	switch s {
	case golibvirt.DOMAIN_RUNNING:
		return provider.StateRunning
	case golibvirt.DOMAIN_PAUSED, golibvirt.DOMAIN_PMSUSPENDED, golibvirt.DOMAIN_BLOCKED:
		return provider.StatePaused
	case golibvirt.DOMAIN_SHUTDOWN:
		return provider.StateShutdown
	case golibvirt.DOMAIN_SHUTOFF:
		return provider.StateShutoff
	case golibvirt.DOMAIN_CRASHED:
		return provider.StateCrashed
	}
	return provider.StateOther
}

func (h *hypervisor) Stats(ctx context.Context, name string) (provider.Stats, error) {
	var out provider.Stats
	err := h.withDomain(ctx, name, "reading stats of", func(dom *golibvirt.Domain) error {
		info, err := dom.GetInfo()
		if err != nil {
			return err
		}
		out.CPUTime = time.Duration(info.CpuTime)
		out.MemoryUsedBytes = int64(info.Memory) * 1024
		// A guest with a balloon driver reports what it really uses.
		if stats, err := dom.MemoryStats(uint32(golibvirt.DOMAIN_MEMORY_STAT_NR), 0); err == nil {
			var avail, unused uint64
			for _, s := range stats {
				switch golibvirt.DomainMemoryStatTags(s.Tag) {
				case golibvirt.DOMAIN_MEMORY_STAT_AVAILABLE:
					avail = s.Val
				case golibvirt.DOMAIN_MEMORY_STAT_UNUSED:
					unused = s.Val
				}
			}
			if avail > 0 && unused <= avail {
				out.MemoryUsedBytes = int64(avail-unused) * 1024
			}
		}
		return nil
	})
	return out, err
}
