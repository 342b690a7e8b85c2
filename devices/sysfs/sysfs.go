// Package sysfs reads a node's PCI devices as Linux shows them under
// /sys/bus/pci/devices, and writes such a tree for simulated nodes and tests
// (Write), so that both go through the same reader.
package sysfs

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// PCIDevice is one PCI function as sysfs shows it.
type PCIDevice struct {
	// Address is the extended BDF, such as 0000:3b:00.0.
	Address string
	// Vendor and Device are the PCI IDs in four lowercase hex digits.
	Vendor, Device string
	// Class is the six-hex-digit class code, such as 030200 (3D controller).
	Class string
	// NUMANode is the node the device is attached to, -1 when none.
	NUMANode int
	// IOMMUGroup is the device's IOMMU group, "" when the host has none
	// (IOMMU off: nothing can be passed through).
	IOMMUGroup string
	// Driver is the bound kernel driver (nvidia, vfio-pci, ice), "" if none.
	Driver string
	// BootVGA is set on the display the firmware booted on (often the
	// BMC's): the host's console, never passed through.
	BootVGA bool
	// PCIeRoot is the root complex Write puts the device under, such as
	// pci0000:3a (default: one per bus). Scan leaves it empty: the standard
	// DRA attribute is read by k8s.io/dynamic-resource-allocation's
	// deviceattribute.
	PCIeRoot string
	// PhysFn is the address of a VF's physical function.
	PhysFn string
	// VFs are a PF's virtual functions, in virtfn order; NumVFs how many are
	// enabled, TotalVFs how many it can have.
	VFs              []string
	NumVFs, TotalVFs int
	// NetDevs are the network interfaces of a NIC function; LinkUp is
	// whether the first one's operstate is up.
	NetDevs []string
	LinkUp  bool
}

// Class prefixes of the kinds of device discovery tells apart.
const (
	ClassDisplayVGA = "0300"
	Class3D         = "0302"
	ClassStorage    = "01"
	ClassNetwork    = "02"
	ClassBridge     = "06"
)

// IsGPU is whether the function is a display or 3D controller.
func (d PCIDevice) IsGPU() bool {
	return strings.HasPrefix(d.Class, ClassDisplayVGA) || strings.HasPrefix(d.Class, Class3D) || strings.HasPrefix(d.Class, "0380")
}

// Scan reads every PCI function under root (the sysfs mount, /sys on a
// node), sorted by address.
func Scan(root string) ([]PCIDevice, error) {
	dir := filepath.Join(root, "bus", "pci", "devices")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading PCI devices: %w", err)
	}
	var out []PCIDevice
	for _, e := range entries {
		d, err := read(root, e.Name())
		if err != nil {
			return nil, fmt.Errorf("PCI device %s: %w", e.Name(), err)
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Address < out[j].Address })
	return out, nil
}

func read(root, addr string) (PCIDevice, error) {
	dev := filepath.Join(root, "bus", "pci", "devices", addr)
	d := PCIDevice{Address: addr, NUMANode: -1}
	var err error
	if d.Vendor, err = hexID(dev, "vendor", 4); err != nil {
		return d, err
	}
	if d.Device, err = hexID(dev, "device", 4); err != nil {
		return d, err
	}
	if d.Class, err = hexID(dev, "class", 6); err != nil {
		return d, err
	}
	if s, ok := value(dev, "numa_node"); ok {
		if n, err := strconv.Atoi(s); err == nil {
			d.NUMANode = n
		}
	}
	d.IOMMUGroup = linkBase(dev, "iommu_group")
	d.Driver = linkBase(dev, "driver")
	d.PhysFn = linkBase(dev, "physfn")
	s, _ := value(dev, "boot_vga")
	d.BootVGA = s == "1"
	for i := 0; ; i++ {
		vf := linkBase(dev, "virtfn"+strconv.Itoa(i))
		if vf == "" {
			break
		}
		d.VFs = append(d.VFs, vf)
	}
	if s, ok := value(dev, "sriov_numvfs"); ok {
		d.NumVFs, _ = strconv.Atoi(s)
	}
	if s, ok := value(dev, "sriov_totalvfs"); ok {
		d.TotalVFs, _ = strconv.Atoi(s)
	}
	if nets, err := os.ReadDir(filepath.Join(dev, "net")); err == nil {
		for _, n := range nets {
			d.NetDevs = append(d.NetDevs, n.Name())
		}
		if len(d.NetDevs) > 0 {
			s, _ := value(filepath.Join(dev, "net", d.NetDevs[0]), "operstate")
			d.LinkUp = s == "up"
		}
	}
	return d, nil
}

// hexID reads a 0x-prefixed ID file as lowercase hex of the given width.
func hexID(dir, name string, width int) (string, error) {
	s, ok := value(dir, name)
	if !ok {
		return "", fmt.Errorf("no %s", name)
	}
	s = strings.ToLower(strings.TrimPrefix(s, "0x"))
	if len(s) != width {
		return "", fmt.Errorf("%s %q: want %d hex digits", name, s, width)
	}
	if _, err := strconv.ParseUint(s, 16, 32); err != nil {
		return "", fmt.Errorf("%s %q: %w", name, s, err)
	}
	return s, nil
}

func value(dir, name string) (string, bool) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(b)), true
}

// linkBase is the last element of a symlink's target ("" if no link).
func linkBase(dir, name string) string {
	t, err := os.Readlink(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	return filepath.Base(t)
}

// NUMANodes counts the host's NUMA nodes (devices/system/node/node*); a
// host without NUMA information has one.
func NUMANodes(root string) int {
	m, _ := filepath.Glob(filepath.Join(root, "devices", "system", "node", "node[0-9]*"))
	return max(1, len(m))
}
