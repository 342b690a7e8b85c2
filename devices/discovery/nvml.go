package discovery

import (
	"errors"
	"fmt"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// NVMLGPU is what NVIDIA's management library says of one GPU.
type NVMLGPU struct {
	// PCIAddress in sysfs's form, such as 0000:3b:00.0.
	PCIAddress  string
	Name        string // NVIDIA H100 80GB HBM3
	UUID        string
	MemoryBytes int64
	// Unhealthy says why the GPU should take no new VM ("" when healthy).
	Unhealthy string
}

// NVML reports on the GPUs the NVIDIA driver runs, by PCI address (those
// sysfs shows bound to it). A GPU NVML cannot reach comes back unhealthy,
// not as an error: one lost GPU must not stop the node's publishing. Unit
// tests give a fake.
type NVML interface {
	GPUs(addresses []string) ([]NVMLGPU, error)
}

// ErrNoNVML is NVML's answer where the NVIDIA driver is not installed: GPUs
// are then known from sysfs alone.
var ErrNoNVML = errors.New("NVML not available (no NVIDIA driver loaded)")

// SystemNVML is the host's libnvidia-ml, loaded at first use.
type SystemNVML struct{}

// GPUs opens NVML, reads the GPUs at addresses and closes it again:
// discovery runs now and then, and a held handle would keep the driver from
// reloading.
func (SystemNVML) GPUs(addresses []string) ([]NVMLGPU, error) {
	lib := nvml.New()
	if ret := lib.Init(); ret != nvml.SUCCESS {
		if ret == nvml.ERROR_LIBRARY_NOT_FOUND || ret == nvml.ERROR_DRIVER_NOT_LOADED {
			return nil, ErrNoNVML
		}
		return nil, fmt.Errorf("NVML init: %v", ret)
	}
	defer lib.Shutdown()
	var out []NVMLGPU
	for _, addr := range addresses {
		g := NVMLGPU{PCIAddress: addr}
		d, ret := lib.DeviceGetHandleByPciBusId(addr)
		if ret != nvml.SUCCESS {
			g.Unhealthy = fmt.Sprintf("NVML cannot reach the GPU: %v", ret)
			out = append(out, g)
			continue
		}
		g.Name, _ = d.GetName()
		g.UUID, _ = d.GetUUID()
		if mem, ret := d.GetMemoryInfo(); ret == nvml.SUCCESS {
			g.MemoryBytes = int64(mem.Total)
		}
		g.Unhealthy = health(d)
		out = append(out, g)
	}
	return out, nil
}

// RememberNVML keeps what NVML said of each GPU: once a GPU is bound to
// vfio-pci (for a VM) NVML no longer sees it, and its model, memory and
// health must not change with its binding.
func RememberNVML(inner NVML) NVML { return &remembered{inner: inner, seen: map[string]NVMLGPU{}} }

type remembered struct {
	inner NVML
	seen  map[string]NVMLGPU
}

func (r *remembered) GPUs(addresses []string) ([]NVMLGPU, error) {
	got, err := r.inner.GPUs(addresses)
	if err != nil && !errors.Is(err, ErrNoNVML) {
		return nil, err
	}
	asked := map[string]bool{}
	for _, a := range addresses {
		asked[a] = true
	}
	for _, g := range got {
		r.seen[g.PCIAddress] = g
	}
	for addr, g := range r.seen {
		if !asked[addr] {
			got = append(got, g)
		}
	}
	return got, nil
}

// health says why a GPU is not fit for a new VM: memory it can no longer
// repair (a row-remapping failure, or pages waiting to be retired until
// the next reset). Features a GPU lacks (ERROR_NOT_SUPPORTED) say nothing.
func health(d nvml.Device) string {
	if _, _, _, failed, ret := d.GetRemappedRows(); ret == nvml.SUCCESS && failed {
		return "row remapping failed: GPU memory has uncorrectable errors"
	}
	if st, ret := d.GetRetiredPagesPendingStatus(); ret == nvml.SUCCESS && st == nvml.FEATURE_ENABLED {
		return "retired pages pending: the GPU needs a reset"
	}
	return ""
}

// NormalizeBusID turns NVML's "00000000:3B:00.0" into sysfs's
// "0000:3b:00.0"; a domain beyond 16 bits keeps its digits ("10000:01:00.0",
// as sysfs names a VMD domain's devices).
func NormalizeBusID(id string) string {
	id = strings.ToLower(id)
	if dom, rest, ok := strings.Cut(id, ":"); ok && len(dom) > 4 {
		dom = strings.TrimLeft(dom, "0")
		for len(dom) < 4 {
			dom = "0" + dom
		}
		id = dom + ":" + rest
	}
	return id
}
