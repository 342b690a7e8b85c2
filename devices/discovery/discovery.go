// Package discovery is what novacron-node learns of its node: the GPUs and
// SR-IOV VFs it may hand to VMs (from sysfs, NVML where NVIDIA's driver
// runs, and the admin's config), and what it publishes of them: the
// Hypervisor's device inventory and DRA ResourceSlices.
package discovery

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/novacron/operator/devices/sysfs"
)

// Config is the platform team's word on a node's devices, from
// novacron-node --config. Nothing is offered to VMs that neither it nor the
// driver binding (vfio-pci) marks as a passthrough candidate.
type Config struct {
	// GPUs to offer besides those bound to vfio-pci: PCI addresses
	// (0000:3b:00.0) or vendor:device IDs (10de:2330). The kubelet plugin
	// binds them to vfio-pci when a VM takes them.
	GPUs []string `json:"gpus,omitempty"`
	// Models names a vendor:device ID's model where pci.ids has none, or to
	// make nodes with and without NVIDIA's driver agree ("10de:1eb8":
	// tesla-t4).
	Models map[string]string `json:"models,omitempty"`
	// SRIOV maps physical functions to the VF pools VMs' sr-iov networks
	// name.
	SRIOV []SRIOVConfig `json:"sriov,omitempty"`
	// Exclude lists PCI addresses never offered, whatever else says.
	Exclude []string `json:"exclude,omitempty"`
}

// SRIOVConfig is one physical function whose VFs form a pool.
type SRIOVConfig struct {
	// PF is the physical function's interface name (ens1f0) or PCI address.
	PF string `json:"pf"`
	// ResourceName is the pool, as NetworkAttachmentDefinitions'
	// k8s.v1.cni.cncf.io/resourceName names it (intel.com/sriov_data).
	ResourceName string `json:"resourceName"`
}

// Validate names the field at fault.
func (c Config) Validate() error {
	for i, g := range c.GPUs {
		if !isAddress(g) && !isID(g) {
			return fmt.Errorf("gpus[%d] %q: want a PCI address (0000:3b:00.0) or a vendor:device ID (10de:2330)", i, g)
		}
	}
	for id, m := range c.Models {
		if !isID(id) {
			return fmt.Errorf("models[%q]: want a vendor:device ID such as 10de:1eb8", id)
		}
		if m == "" || Slug(m) != m {
			return fmt.Errorf("models[%q] %q: want a lowercase name of letters, digits and dashes, such as tesla-t4", id, m)
		}
	}
	for i, s := range c.SRIOV {
		if s.PF == "" {
			return fmt.Errorf("sriov[%d].pf: required (an interface name or a PCI address)", i)
		}
		if s.ResourceName == "" {
			return fmt.Errorf("sriov[%d].resourceName: required, such as intel.com/sriov_data", i)
		}
	}
	for i, a := range c.Exclude {
		if !isAddress(a) {
			return fmt.Errorf("exclude[%d] %q: want a PCI address such as 0000:3b:00.0", i, a)
		}
	}
	return nil
}

func isAddress(s string) bool {
	var d, b, dev, f int
	n, err := fmt.Sscanf(s, "%04x:%02x:%02x.%1x", &d, &b, &dev, &f)
	return err == nil && n == 4 && len(s) == 12 && s == strings.ToLower(s)
}

func isID(s string) bool {
	v, d, ok := strings.Cut(s, ":")
	return ok && len(v) == 4 && len(d) == 4 && strings.Trim(strings.ToLower(s), "0123456789abcdef:") == ""
}

// GPU is a GPU the node offers.
type GPU struct {
	PCIAddress         string
	VendorID, DeviceID string
	Vendor, Model      string // nvidia, tesla-t4
	NUMANode           int    // -1: none
	IOMMUGroup, Driver string
	UUID               string
	MemoryBytes        int64
	// Unhealthy says why it takes no new VM ("" when healthy).
	Unhealthy string
}

// VF is an SR-IOV virtual function the node offers.
type VF struct {
	PCIAddress         string
	VendorID, DeviceID string
	NUMANode           int
	IOMMUGroup, Driver string
	ResourceName       string
	PF, PFAddress      string // ens1f0, 0000:5e:00.0
	LinkUp             bool   // the PF's link
}

// Skipped is a device discovery considered and does not offer, with why.
type Skipped struct {
	PCIAddress string
	Why        string
}

// Inventory is what discovery found on a node.
type Inventory struct {
	// Bus is every PCI address on the node, offered or not: a device
	// published before and still here was withdrawn, not lost.
	Bus       []string
	NUMANodes int
	GPUs      []GPU
	VFs       []VF
	Skipped   []Skipped
}

// Discover reads the node under sysfsRoot. nv may be nil (no NVIDIA
// driver); ids names devices NVML does not.
func Discover(sysfsRoot string, cfg Config, ids *PCIIDs, nv NVML) (Inventory, error) {
	if err := cfg.Validate(); err != nil {
		return Inventory{}, fmt.Errorf("device config: %w", err)
	}
	devs, err := sysfs.Scan(sysfsRoot)
	if err != nil {
		return Inventory{}, err
	}
	byNVML := map[string]NVMLGPU{}
	var nvidia []string
	for _, d := range devs {
		if d.IsGPU() && d.Driver == "nvidia" {
			nvidia = append(nvidia, d.Address)
		}
	}
	if nv != nil {
		gpus, err := nv.GPUs(nvidia)
		if err != nil && !errors.Is(err, ErrNoNVML) {
			return Inventory{}, err
		}
		for _, g := range gpus {
			byNVML[g.PCIAddress] = g
		}
	}
	inv := Inventory{NUMANodes: sysfs.NUMANodes(sysfsRoot)}
	skip := func(addr, format string, args ...any) {
		inv.Skipped = append(inv.Skipped, Skipped{PCIAddress: addr, Why: fmt.Sprintf(format, args...)})
	}
	byAddr := map[string]sysfs.PCIDevice{}
	for _, d := range devs {
		byAddr[d.Address] = d
		inv.Bus = append(inv.Bus, d.Address)
	}
	offered := map[string]bool{}
	for _, d := range devs {
		if !d.IsGPU() {
			continue
		}
		id := d.Vendor + ":" + d.Device
		listed := slices.Contains(cfg.GPUs, d.Address) || slices.Contains(cfg.GPUs, id)
		switch {
		case slices.Contains(cfg.Exclude, d.Address):
			skip(d.Address, "excluded by the device config")
			continue
		case d.BootVGA:
			skip(d.Address, "the host's boot display")
			continue
		case !isAddress(d.Address):
			skip(d.Address, "a PCI domain beyond 16 bits (a VMD domain): not offered")
			continue
		case d.IOMMUGroup == "":
			skip(d.Address, "no IOMMU group (the IOMMU is off): it cannot be passed through")
			continue
		case d.Driver != "vfio-pci" && !listed:
			skip(d.Address, "bound to %s and not in the device config's gpus", orNone(d.Driver))
			continue
		}
		g := GPU{PCIAddress: d.Address, VendorID: d.Vendor, DeviceID: d.Device,
			Vendor: ids.VendorSlug(d.Vendor), NUMANode: d.NUMANode, IOMMUGroup: d.IOMMUGroup, Driver: d.Driver}
		if n, ok := byNVML[d.Address]; ok {
			g.UUID, g.MemoryBytes, g.Unhealthy = n.UUID, n.MemoryBytes, n.Unhealthy
			g.Model = Slug(strings.TrimPrefix(n.Name, "NVIDIA "))
		}
		if g.Model == "" {
			g.Model = ids.ModelSlug(d.Vendor, d.Device)
		}
		if m, ok := cfg.Models[id]; ok {
			g.Model = m
		}
		if g.Model == "" {
			g.Model = d.Device
		}
		offered[d.Address] = true
		inv.GPUs = append(inv.GPUs, g)
	}
	pfs := map[string]int{}
	for i, s := range cfg.SRIOV {
		pf, ok := findPF(devs, s.PF)
		if !ok {
			skip("", "sriov[%d]: no physical function %s on this node", i, s.PF)
			continue
		}
		if j, dup := pfs[pf.Address]; dup {
			skip(pf.Address, "sriov[%d]: %s is sriov[%d]'s physical function already", i, s.PF, j)
			continue
		}
		pfs[pf.Address] = i
		if len(pf.VFs) == 0 {
			skip(pf.Address, "sriov[%d]: %s has no VFs enabled (sriov_numvfs is 0)", i, s.PF)
			continue
		}
		ifname := ""
		if len(pf.NetDevs) > 0 {
			ifname = pf.NetDevs[0]
		}
		for _, addr := range pf.VFs {
			vf, ok := byAddr[addr]
			switch {
			case !ok:
				skip(addr, "a VF of %s missing from the PCI bus", s.PF)
				continue
			case slices.Contains(cfg.Exclude, addr):
				skip(addr, "excluded by the device config")
				continue
			case vf.IOMMUGroup == "":
				skip(addr, "no IOMMU group (the IOMMU is off): it cannot be passed through")
				continue
			case offered[addr]:
				skip(addr, "offered as a GPU already")
				continue
			case !isAddress(addr):
				skip(addr, "a PCI domain beyond 16 bits (a VMD domain): not offered")
				continue
			}
			offered[addr] = true
			inv.VFs = append(inv.VFs, VF{PCIAddress: addr, VendorID: vf.Vendor, DeviceID: vf.Device,
				NUMANode: vf.NUMANode, IOMMUGroup: vf.IOMMUGroup, Driver: vf.Driver, ResourceName: s.ResourceName,
				PF: ifname, PFAddress: pf.Address, LinkUp: pf.LinkUp})
		}
	}
	sort.SliceStable(inv.Skipped, func(i, j int) bool { return inv.Skipped[i].PCIAddress < inv.Skipped[j].PCIAddress })
	return inv, nil
}

func findPF(devs []sysfs.PCIDevice, pf string) (sysfs.PCIDevice, bool) {
	for _, d := range devs {
		if d.Address == pf || slices.Contains(d.NetDevs, pf) {
			return d, d.PhysFn == ""
		}
	}
	return sysfs.PCIDevice{}, false
}

func orNone(driver string) string {
	if driver == "" {
		return "no driver"
	}
	return driver
}

// LoadConfig reads a device config file (YAML or JSON; unknown fields are
// refused, so a misspelt key is not silently ignored); "" is the empty
// config.
func LoadConfig(path string) (Config, error) {
	var cfg Config
	if path == "" {
		return cfg, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("device config: %w", err)
	}
	if err := yaml.UnmarshalStrict(b, &cfg); err != nil {
		return cfg, fmt.Errorf("device config %s: %w", path, err)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("device config %s: %w", path, err)
	}
	return cfg, nil
}
