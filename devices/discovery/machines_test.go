package discovery

import (
	"fmt"

	"github.com/novacron/operator/devices/sysfs"
)

// The fixture machines mirror real ones: their PCI IDs, classes, drivers,
// NUMA placement and the host devices around the ones VMs may take.

// dgxH100 is an 8-GPU H100 SXM5 box over two NUMA nodes, the NVIDIA driver
// loaded: four GPUs per socket, NVSwitches, NVMe, and the BMC's display.
func dgxH100() sysfs.Machine {
	m := sysfs.Machine{NUMANodes: 2, Devices: []sysfs.PCIDevice{
		{Address: "0000:03:00.0", Vendor: "1a03", Device: "2000", Class: "030000", NUMANode: 0, Driver: "ast", BootVGA: true, PCIeRoot: "pci0000:00"},
		{Address: "0000:05:00.0", Vendor: "144d", Device: "a80a", Class: "010802", NUMANode: 0, Driver: "nvme"},
	}}
	for i, bus := range []string{"18", "2a", "3a", "5d", "9a", "ab", "ba", "db"} {
		m.Devices = append(m.Devices, sysfs.PCIDevice{Address: "0000:" + bus + ":00.0", Vendor: "10de", Device: "2330", Class: "030200",
			NUMANode: i / 4, Driver: "nvidia"})
	}
	for i, bus := range []string{"05", "06", "07", "08"} {
		m.Devices = append(m.Devices, sysfs.PCIDevice{Address: "0000:" + bus + ":00.1", Vendor: "10de", Device: "22a3", Class: "068000",
			NUMANode: i / 2, Driver: "nvidia"})
	}
	return m
}

// dgxNVML is what NVML says of dgxH100's GPUs; the one at 0000:ba:00.0 has
// had a row-remapping failure.
func dgxNVML() fakeNVML {
	var f fakeNVML
	for i, bus := range []string{"18", "2a", "3a", "5d", "9a", "ab", "ba", "db"} {
		g := NVMLGPU{PCIAddress: "0000:" + bus + ":00.0", Name: "NVIDIA H100 80GB HBM3",
			UUID: fmt.Sprintf("GPU-6f7a1c2e-0b4d-4e1a-9c3b-00000000000%d", i), MemoryBytes: 81559 << 20}
		if bus == "ba" {
			g.Unhealthy = "row remapping failed: GPU memory has uncorrectable errors"
		}
		f.gpus = append(f.gpus, g)
	}
	return f
}

// t4VFIO is a two-socket server with two Tesla T4s already bound to
// vfio-pci (no NVIDIA driver on the host), a Matrox BMC display and the
// chipset's SATA controller.
func t4VFIO() sysfs.Machine {
	return sysfs.Machine{NUMANodes: 2, Devices: []sysfs.PCIDevice{
		{Address: "0000:00:11.5", Vendor: "8086", Device: "a1d2", Class: "010601", NUMANode: 0, Driver: "ahci", PCIeRoot: "pci0000:00"},
		{Address: "0000:03:00.0", Vendor: "102b", Device: "0534", Class: "030000", NUMANode: 0, Driver: "mgag200", BootVGA: true, PCIeRoot: "pci0000:00"},
		{Address: "0000:3b:00.0", Vendor: "10de", Device: "1eb8", Class: "030200", NUMANode: 0, Driver: "vfio-pci", PCIeRoot: "pci0000:3a"},
		{Address: "0000:af:00.0", Vendor: "10de", Device: "1eb8", Class: "030200", NUMANode: 1, Driver: "vfio-pci", PCIeRoot: "pci0000:ae"},
	}}
}

// e810 is a node with an Intel E810-C: port 0 (ens1f0, link up) has 8 VFs
// enabled, bound to iavf; port 1 has none.
func e810() sysfs.Machine {
	m := sysfs.Machine{NUMANodes: 1, Devices: []sysfs.PCIDevice{
		{Address: "0000:5e:00.0", Vendor: "8086", Device: "1593", Class: "020000", NUMANode: 0, Driver: "ice", TotalVFs: 128, NetDevs: []string{"ens1f0"}, LinkUp: true, PCIeRoot: "pci0000:5d"},
		{Address: "0000:5e:00.1", Vendor: "8086", Device: "1593", Class: "020000", NUMANode: 0, Driver: "ice", TotalVFs: 128, NetDevs: []string{"ens1f1"}, PCIeRoot: "pci0000:5d"},
	}}
	for i := range 8 {
		m.Devices = append(m.Devices, sysfs.PCIDevice{Address: fmt.Sprintf("0000:5e:01.%d", i), Vendor: "8086", Device: "1889", Class: "020000",
			NUMANode: 0, Driver: "iavf", PhysFn: "0000:5e:00.0", NetDevs: []string{fmt.Sprintf("ens1f0v%d", i)}, PCIeRoot: "pci0000:5d"})
	}
	return m
}

// noIOMMU is a small node booted without the IOMMU: a T4 with no driver
// and an E810 with VFs, none of which can be passed through.
func noIOMMU() sysfs.Machine {
	m := e810()
	m.NoIOMMU, m.NUMANodes = true, 0
	for i := range m.Devices {
		m.Devices[i].NUMANode = -1
	}
	m.Devices = append(m.Devices, sysfs.PCIDevice{Address: "0000:3b:00.0", Vendor: "10de", Device: "1eb8", Class: "030200", NUMANode: -1})
	return m
}

type fakeNVML struct {
	gpus []NVMLGPU
	err  error
}

// GPUs answers for the addresses asked, as NVML does: a GPU it does not know
// is unreachable.
func (f fakeNVML) GPUs(addresses []string) ([]NVMLGPU, error) {
	if f.err != nil {
		return nil, f.err
	}
	var out []NVMLGPU
	for _, a := range addresses {
		g := NVMLGPU{PCIAddress: a, Unhealthy: "NVML cannot reach the GPU: ERROR_GPU_IS_LOST"}
		for _, known := range f.gpus {
			if known.PCIAddress == a {
				g = known
			}
		}
		out = append(out, g)
	}
	return out, nil
}
