// Package domain is what a VM becomes on a node: the names of its domain and
// volumes there, its stable MACs, its cloud-init disk, the image catalog its
// root disk comes from, and the Builder that makes its disks and domain
// definition. The VM, migration and snapshot controllers all name and build
// domains through it, so a VM is the same domain wherever it runs.
package domain

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/provider"
)

// DomainName is the hypervisor domain of a VM. Kubernetes names cannot hold
// "_", so it cannot collide across namespaces.
func DomainName(vm *novacronv1.VirtualMachine) string {
	return vm.Namespace + "_" + vm.Name
}

// volumeBase starts the names of the VM's volumes: its domain name and its
// UID, so a later VM of the same name (its namespace deleted and made again)
// never finds an earlier VM's disk and boots its data. A VM from before UID
// naming keeps its volumes' names (Status.LegacyVolumeNames).
func volumeBase(vm *novacronv1.VirtualMachine) string {
	if vm.Status.LegacyVolumeNames {
		return DomainName(vm)
	}
	return DomainName(vm) + "-" + string(vm.UID)
}

// RootVolumeName is the VM's root disk volume in the node's storage pool.
func RootVolumeName(vm *novacronv1.VirtualMachine) string {
	return volumeBase(vm) + "-root.qcow2"
}

// CloudInitVolumeName is the VM's cloud-init NoCloud disk.
func CloudInitVolumeName(vm *novacronv1.VirtualMachine) string {
	return volumeBase(vm) + "-cidata.iso"
}

// legacyRootVolumeName is the root disk's name before UID naming.
func legacyRootVolumeName(vm *novacronv1.VirtualMachine) string {
	return DomainName(vm) + "-root.qcow2"
}

// VolumeNames are the volumes the VM has in its node's storage pool.
func VolumeNames(vm *novacronv1.VirtualMachine) []string {
	return []string{RootVolumeName(vm), CloudInitVolumeName(vm)}
}

// unclaimedLegacyDisk refuses to make a new disk for a VM whose node holds a
// disk under its name from before UID naming that no domain of it claims: it
// may be this VM's (its domain gone before the VM recorded domainDefined),
// whose data a fresh disk would silently leave behind, or an earlier VM's.
// Only an admin can tell.
func unclaimedLegacyDisk(ctx context.Context, vm *novacronv1.VirtualMachine, pool, node string, hv provider.Hypervisor) error {
	if vm.Status.LegacyVolumeNames || vm.Status.DomainDefined {
		return nil
	}
	if legacy, err := onlyLegacyRoot(ctx, vm, pool, hv); err != nil || !legacy {
		return err
	}
	return SpecErrorf(novacronv1.ReasonDomainMissing, "node %s holds the disk %s of a VM of this name from before NovaCron named disks by VM UID, and no domain of this VM uses it: NovaCron does not make a blank disk beside it. "+
		"A platform admin either deletes that volume (it is an earlier VM's) or has this VM start from it: kubectl patch vm %s -n %s --subresource=status --type=merge -p '{\"status\":{\"legacyVolumeNames\":true}}'",
		node, legacyRootVolumeName(vm), vm.Name, vm.Namespace)
}

// AdoptLegacyVolumes marks a VM whose volumes have the names they had before
// UID naming (Status.LegacyVolumeNames): once, and only when ours says the
// domain on the node is this VM's (NovaCron defined it, or its UUID is the
// VM's UID), its UID-named root disk is not there, and the old one is.
func AdoptLegacyVolumes(ctx context.Context, vm *novacronv1.VirtualMachine, ours bool, pool string, hv provider.Hypervisor) error {
	if vm.Status.LegacyVolumeNames || !ours {
		return nil
	}
	legacy, err := onlyLegacyRoot(ctx, vm, pool, hv)
	vm.Status.LegacyVolumeNames = legacy
	return err
}

// onlyLegacyRoot says whether pool holds the VM's root disk under its name
// from before UID naming and not under its UID name.
func onlyLegacyRoot(ctx context.Context, vm *novacronv1.VirtualMachine, pool string, hv provider.Hypervisor) (bool, error) {
	if _, err := hv.VolumePath(ctx, pool, RootVolumeName(vm)); !errors.Is(err, provider.ErrNotFound) {
		return false, err // its own disk exists (or the node cannot say)
	}
	_, err := hv.VolumePath(ctx, pool, legacyRootVolumeName(vm))
	if errors.Is(err, provider.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Owner is the UUID of the domain of the VM's name on hv and whether it is
// the VM's (NovaCron gives a VM's domain the VM's UID), or ErrNotFound. A
// domain found by name alone may be an earlier VM's of the same name.
func Owner(ctx context.Context, hv provider.Hypervisor, vm *novacronv1.VirtualMachine) (uuid string, ours bool, err error) {
	uuid, err = hv.UUID(ctx, DomainName(vm))
	return uuid, err == nil && strings.EqualFold(uuid, string(vm.UID)), err
}

// DeleteVolumes removes the VM's volumes from pool; missing ones are no error.
func DeleteVolumes(ctx context.Context, vm *novacronv1.VirtualMachine, pool string, hv provider.Hypervisor) error {
	for _, vol := range VolumeNames(vm) {
		if err := hv.DeleteVolume(ctx, pool, vol); err != nil {
			return err
		}
	}
	return nil
}

// SerialLogPath is where the guest's serial console goes on its node;
// libvirt keeps QEMU's own log as <domain>.log in the same folder.
func SerialLogPath(dir string, vm *novacronv1.VirtualMachine) string {
	return dir + "/" + DomainName(vm) + "-serial.log"
}

// StableMAC derives a MAC address from the VM's UID and interface name, so it
// is the same on every start and on every node.
func StableMAC(uid, iface string) string {
	sum := sha256.Sum256([]byte(uid + "/" + iface))
	return strings.ToLower(fmt.Sprintf("52:54:00:%02x:%02x:%02x", sum[0], sum[1], sum[2]))
}

// Interfaces describes the VM's NICs for its status: stable MACs, the VFs
// assigned to its sr-iov networks, and static addresses.
func Interfaces(vm *novacronv1.VirtualMachine, assignment novacronv1.DeviceAssignment) []novacronv1.InterfaceStatus {
	var out []novacronv1.InterfaceStatus
	for _, n := range vm.Spec.Template.Spec.Networks {
		s := novacronv1.InterfaceStatus{Name: n.Name, MAC: StableMAC(string(vm.UID), n.Name), PCIAddress: assignment.VFs[n.Name]}
		if n.IPv4 != nil && n.IPv4.Method == novacronv1.IPv4Static {
			ip, _, _ := strings.Cut(n.IPv4.Address, "/")
			s.IPAddress, s.IPAddresses = ip, []string{ip}
		}
		out = append(out, s)
	}
	return out
}
