package devenv

import (
	"fmt"

	resourceapi "k8s.io/api/resource/v1"
	"os"
	"path/filepath"

	"github.com/novacron/operator/devices/discovery"
	"github.com/novacron/operator/devices/sysfs"
)

// gpuVendorIDs are the PCI vendor IDs of the GPU vendors a profile may
// name.
var gpuVendorIDs = map[string]string{"nvidia": "10de", "amd": "1002", "intel": "8086"}

// Machine is the node's hardware as its sysfs would show it, and the device
// config its platform team would write: two NUMA nodes; the profile's GPUs
// bound to vfio-pci on buses from 3b up, alternating NUMA nodes; each VF
// pool an Intel E810 port with its VFs. GPU kinds get made-up device IDs
// that the config names after the profile's models.
func (n SimNode) Machine() (sysfs.Machine, discovery.Config) {
	m := sysfs.Machine{NUMANodes: 2}
	cfg := discovery.Config{Models: map[string]string{}}
	bus, gpus := 0x3b, 0
	for j, g := range n.Kind.GPUs {
		vendor, device := gpuVendorIDs[g.Vendor], fmt.Sprintf("%04x", 0xf000+j)
		cfg.Models[vendor+":"+device] = g.Model
		for range g.Count {
			m.Devices = append(m.Devices, sysfs.PCIDevice{Address: fmt.Sprintf("0000:%02x:00.0", bus), Vendor: vendor, Device: device,
				Class: "030200", NUMANode: gpus % 2, Driver: "vfio-pci"})
			bus++
			gpus++
		}
	}
	for p, s := range n.Kind.SRIOV {
		pf := sysfs.PCIDevice{Address: fmt.Sprintf("0000:%02x:00.0", 0x5e+p), Vendor: "8086", Device: "1593", Class: "020000",
			NUMANode: 0, Driver: "ice", TotalVFs: 64, NetDevs: []string{s.PhysicalFunction}, LinkUp: true}
		if s.PhysicalFunction == "" {
			pf.NetDevs = []string{fmt.Sprintf("ens%df0", p+1)}
		}
		m.Devices = append(m.Devices, pf)
		for i := range s.VFs {
			m.Devices = append(m.Devices, sysfs.PCIDevice{Address: fmt.Sprintf("0000:%02x:%02x.%d", 0x5e+p, 2+i/8, i%8), Vendor: "8086", Device: "1889",
				Class: "020000", NUMANode: 0, Driver: "vfio-pci", PhysFn: pf.Address})
		}
		cfg.SRIOV = append(cfg.SRIOV, discovery.SRIOVConfig{PF: pf.NetDevs[0], ResourceName: s.ResourceName})
	}
	return m, cfg
}

// discover runs novacron-node's discovery and publishing on the node's
// Machine, laid out in a scratch sysfs that goes again afterwards: the
// inventory, and the ResourceSlices the agent would publish from it.
func (n SimNode) discover() (discovery.Inventory, []*resourceapi.ResourceSlice, error) {
	dir, err := os.MkdirTemp("", "novacron-sysfs-")
	if err != nil {
		return discovery.Inventory{}, nil, err
	}
	defer os.RemoveAll(dir)
	m, cfg := n.Machine()
	root := filepath.Join(dir, "sys")
	if err := sysfs.Write(root, m); err != nil {
		return discovery.Inventory{}, nil, fmt.Errorf("node %s: %w", n.Name, err)
	}
	inv, err := discovery.Discover(root, cfg, &discovery.PCIIDs{}, nil)
	if err != nil {
		return discovery.Inventory{}, nil, fmt.Errorf("node %s: %w", n.Name, err)
	}
	if len(inv.GPUs)+len(inv.VFs) == 0 {
		return inv, nil, nil
	}
	slices, err := discovery.ResourceSlices(n.Name, root, inv)
	if err != nil {
		return discovery.Inventory{}, nil, fmt.Errorf("node %s: %w", n.Name, err)
	}
	return inv, slices, nil
}
