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

// NVML lists the GPUs the NVIDIA driver runs. Discovery reads it only where
// the driver is loaded; unit tests give a fake.
type NVML interface {
	GPUs() ([]NVMLGPU, error)
}

// ErrNoNVML is NVML's answer where the NVIDIA driver is not installed: GPUs
// are then known from sysfs alone.
var ErrNoNVML = errors.New("NVML not available (no NVIDIA driver loaded)")

// SystemNVML is the host's libnvidia-ml, loaded at first use.
type SystemNVML struct{}

// GPUs opens NVML, reads every device and closes it again: discovery runs
// now and then, and a held handle would keep the driver from reloading.
func (SystemNVML) GPUs() ([]NVMLGPU, error) {
	lib := nvml.New()
	if ret := lib.Init(); ret != nvml.SUCCESS {
		if ret == nvml.ERROR_LIBRARY_NOT_FOUND || ret == nvml.ERROR_DRIVER_NOT_LOADED {
			return nil, ErrNoNVML
		}
		return nil, fmt.Errorf("NVML init: %v", ret)
	}
	defer lib.Shutdown()
	n, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("NVML device count: %v", ret)
	}
	var out []NVMLGPU
	for i := range n {
		d, ret := lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("NVML device %d: %v", i, ret)
		}
		pci, ret := d.GetPciInfo()
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("NVML device %d PCI info: %v", i, ret)
		}
		g := NVMLGPU{PCIAddress: NormalizeBusID(cString(pci.BusId[:]))}
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

func cString(b []int8) string {
	var sb strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		sb.WriteByte(byte(c))
	}
	return sb.String()
}

// NormalizeBusID turns NVML's "00000000:3B:00.0" into sysfs's
// "0000:3b:00.0".
func NormalizeBusID(id string) string {
	id = strings.ToLower(id)
	if dom, rest, ok := strings.Cut(id, ":"); ok && len(dom) > 4 {
		id = dom[len(dom)-4:] + ":" + rest
	}
	return id
}
