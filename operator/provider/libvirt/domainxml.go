package libvirt

import (
	"fmt"
	"strconv"
	"strings"

	"libvirt.org/go/libvirtxml"

	"github.com/novacron/operator/operator/provider"
)

// domainXML renders a provider.Domain as libvirt domain XML.
func domainXML(domType string, d provider.Domain) (string, error) {
	x := libvirtxml.Domain{
		Type:        domType,
		Name:        d.Name,
		UUID:        d.UUID,
		Description: d.Description,
		Memory:      &libvirtxml.DomainMemory{Value: uint(d.MemoryBytes / 1024), Unit: "KiB"},
		VCPU:        &libvirtxml.DomainVCPU{Value: uint(d.VCPUs)},
		OS:          &libvirtxml.DomainOS{Type: &libvirtxml.DomainOSType{Type: "hvm"}},
		// ACPI lets the guest see the power button that a graceful stop presses.
		Features:   &libvirtxml.DomainFeatureList{ACPI: &libvirtxml.DomainFeature{}},
		OnPoweroff: "destroy",
		OnReboot:   "restart",
		OnCrash:    "destroy",
		Devices:    &libvirtxml.DomainDeviceList{},
	}
	if domType != "test" {
		x.OS.Type.Machine = "q35"
		x.OS.Type.Arch = "x86_64"
	}
	if d.Kernel != "" {
		x.OS.Kernel, x.OS.Initrd, x.OS.Cmdline = d.Kernel, d.Initrd, d.Cmdline
	}
	dev := x.Devices
	for i, disk := range d.Disks {
		dd := libvirtxml.DomainDisk{
			Device: "disk",
			Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: disk.Format},
			Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: disk.Path}},
			Target: &libvirtxml.DomainDiskTarget{Dev: fmt.Sprintf("vd%c", 'a'+i), Bus: "virtio"},
		}
		if disk.CDROM {
			// A read-only medium has nothing to snapshot, and internal
			// snapshots refuse any snapshotted disk that is not qcow2.
			dd.Snapshot = "no"
			dd.Device = "cdrom"
			dd.Target = &libvirtxml.DomainDiskTarget{Dev: fmt.Sprintf("sd%c", 'a'+i), Bus: "sata"}
		}
		if disk.ReadOnly || disk.CDROM {
			dd.ReadOnly = &libvirtxml.DomainDiskReadOnly{}
		}
		dev.Disks = append(dev.Disks, dd)
	}
	for _, nic := range d.NICs {
		ni := libvirtxml.DomainInterface{MAC: &libvirtxml.DomainInterfaceMAC{Address: nic.MAC}}
		if nic.PCIAddress != "" {
			addr, err := parsePCIAddress(nic.PCIAddress)
			if err != nil {
				return "", err
			}
			ni.Managed = "yes"
			ni.Source = &libvirtxml.DomainInterfaceSource{Hostdev: &libvirtxml.DomainInterfaceSourceHostdev{PCI: &libvirtxml.DomainHostdevSubsysPCISource{Address: addr}}}
		} else {
			ni.Source = &libvirtxml.DomainInterfaceSource{Network: &libvirtxml.DomainInterfaceSourceNetwork{Network: nic.Network}}
			ni.Model = &libvirtxml.DomainInterfaceModel{Type: "virtio"}
			if nic.CleanTraffic {
				// Learning from DHCP only: "any" would take the first
				// address the guest itself sends from.
				param := libvirtxml.DomainInterfaceFilterParam{Name: "CTRL_IP_LEARNING", Value: "dhcp"}
				if nic.IP != "" {
					param = libvirtxml.DomainInterfaceFilterParam{Name: "IP", Value: nic.IP}
				}
				ni.FilterRef = &libvirtxml.DomainInterfaceFilterRef{Filter: "clean-traffic", Parameters: []libvirtxml.DomainInterfaceFilterParam{param}}
			}
		}
		dev.Interfaces = append(dev.Interfaces, ni)
	}
	for _, pci := range d.HostDevices {
		addr, err := parsePCIAddress(pci)
		if err != nil {
			return "", err
		}
		dev.Hostdevs = append(dev.Hostdevs, libvirtxml.DomainHostdev{
			Managed:   "yes",
			SubsysPCI: &libvirtxml.DomainHostdevSubsysPCI{Source: &libvirtxml.DomainHostdevSubsysPCISource{Address: addr}},
		})
	}
	if d.SerialLogPath != "" {
		port := uint(0)
		dev.Serials = append(dev.Serials, libvirtxml.DomainSerial{
			Source: &libvirtxml.DomainChardevSource{File: &libvirtxml.DomainChardevSourceFile{Path: d.SerialLogPath, Append: "on"}},
			Target: &libvirtxml.DomainSerialTarget{Port: &port},
		})
	}
	return x.Marshal()
}

// parsePCIAddress reads a host PCI address such as 0000:3b:00.0.
func parsePCIAddress(s string) (*libvirtxml.DomainAddressPCI, error) {
	bad := fmt.Errorf("PCI address %q is not of the form 0000:3b:00.0", s)
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return nil, bad
	}
	slotFn := strings.Split(parts[2], ".")
	if len(slotFn) != 2 {
		return nil, bad
	}
	var vals [4]uint
	for i, p := range []string{parts[0], parts[1], slotFn[0], slotFn[1]} {
		v, err := strconv.ParseUint(p, 16, 32)
		if err != nil {
			return nil, bad
		}
		vals[i] = uint(v)
	}
	return &libvirtxml.DomainAddressPCI{Domain: &vals[0], Bus: &vals[1], Slot: &vals[2], Function: &vals[3]}, nil
}
