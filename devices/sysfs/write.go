package sysfs

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Machine is a host's PCI hardware as Write lays it out: what a simulated
// node or a test fixture has instead of real devices.
type Machine struct {
	// NUMANodes is how many NUMA nodes the host has (0: no NUMA
	// information, as on many small machines).
	NUMANodes int
	// NoIOMMU leaves out the IOMMU groups, as on a host booted without
	// intel_iommu=on (or with VT-d off).
	NoIOMMU bool
	// Devices are the PCI functions. A VF names its PF in PhysFn; the PF's
	// VFs and virtfn links follow from them.
	Devices []PCIDevice
}

// Write lays out m under root as Linux does under /sys: devices under
// devices/<root complex>/<address>, linked from bus/pci/devices, with their
// driver, IOMMU group, PF and VF links and network interfaces. root must be
// empty or missing.
func Write(root string, m Machine) error {
	for n := range m.NUMANodes {
		if err := put(filepath.Join(root, "devices", "system", "node", fmt.Sprintf("node%d", n)), "online", "1"); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "bus", "pci", "devices"), 0o755); err != nil {
		return err
	}
	vfs := map[string][]string{}
	for _, d := range m.Devices {
		if d.PhysFn != "" {
			vfs[d.PhysFn] = append(vfs[d.PhysFn], d.Address)
		}
	}
	for i, d := range m.Devices {
		if err := writeDevice(root, m, i, d, vfs[d.Address]); err != nil {
			return fmt.Errorf("PCI device %s: %w", d.Address, err)
		}
	}
	return nil
}

func writeDevice(root string, m Machine, i int, d PCIDevice, vfs []string) error {
	pcieRoot := d.PCIeRoot
	if pcieRoot == "" {
		// A root complex per bus, as on most servers' GPU and NIC slots.
		pcieRoot = "pci" + d.Address[:7]
	}
	dir := filepath.Join(root, "devices", pcieRoot, d.Address)
	files := map[string]string{
		"vendor": "0x" + d.Vendor, "device": "0x" + d.Device, "class": "0x" + d.Class,
		"numa_node": strconv.Itoa(d.NUMANode),
	}
	if d.IsGPU() && strings.HasPrefix(d.Class, ClassDisplayVGA) {
		files["boot_vga"] = map[bool]string{true: "1", false: "0"}[d.BootVGA]
	}
	if d.TotalVFs > 0 || len(vfs) > 0 {
		files["sriov_totalvfs"] = strconv.Itoa(max(d.TotalVFs, len(vfs)))
		files["sriov_numvfs"] = strconv.Itoa(len(vfs))
	}
	for name, v := range files {
		if err := put(dir, name, v); err != nil {
			return err
		}
	}
	links := map[string]string{filepath.Join(root, "bus", "pci", "devices", d.Address): dir}
	if d.Driver != "" {
		drv := filepath.Join(root, "bus", "pci", "drivers", d.Driver)
		links[filepath.Join(dir, "driver")] = drv
		links[filepath.Join(drv, d.Address)] = dir
	}
	if !m.NoIOMMU {
		group := d.IOMMUGroup
		if group == "" {
			group = strconv.Itoa(i)
		}
		g := filepath.Join(root, "kernel", "iommu_groups", group)
		links[filepath.Join(dir, "iommu_group")] = g
		links[filepath.Join(g, "devices", d.Address)] = dir
	}
	if d.PhysFn != "" {
		links[filepath.Join(dir, "physfn")] = filepath.Join(filepath.Dir(dir), d.PhysFn)
	}
	for n, vf := range vfs {
		links[filepath.Join(dir, "virtfn"+strconv.Itoa(n))] = filepath.Join(filepath.Dir(dir), vf)
	}
	for link, target := range links {
		if err := relink(link, target); err != nil {
			return err
		}
	}
	for n, ifname := range d.NetDevs {
		state := "down"
		if n == 0 && d.LinkUp {
			state = "up"
		}
		if err := put(filepath.Join(dir, "net", ifname), "operstate", state); err != nil {
			return err
		}
	}
	return nil
}

func put(dir, name, content string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name), []byte(content+"\n"), 0o644)
}

// relink makes link a relative symlink to target, as sysfs's links are (a
// tree copied elsewhere still resolves).
func relink(link, target string) error {
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return err
	}
	rel, err := filepath.Rel(filepath.Dir(link), target)
	if err != nil {
		return err
	}
	return os.Symlink(rel, link)
}
