package domain

import (
	"context"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/devices"
	"github.com/novacron/operator/operator/hypervisors"
	"github.com/novacron/operator/operator/provider"
)

// defaultDiskSize is a VM's root disk when resources.disk is not set.
var defaultDiskSize = resource.MustParse("10Gi")

// SpecError is a problem with the VM's spec, or with what it names (an image,
// a Secret, a node too small), that retrying cannot fix: the VM shows it and
// waits for a change. It is deliberately not controller-runtime's
// TerminalError: the VM controller looks at a failed VM again now and then,
// so an edit of what it names (the image catalog) heals it without a change
// to the VM.
type SpecError struct {
	// Reason is the VM's Ready condition reason (api/v1alpha1 conditions.go).
	Reason string
	Err    error
}

func (e *SpecError) Error() string { return e.Err.Error() }
func (e *SpecError) Unwrap() error { return e.Err }

// SpecErrorf makes a SpecError.
func SpecErrorf(reason, format string, args ...any) error {
	return &SpecError{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// Builder makes a VM's disks on a node and its domain definition there. It
// reads the image catalog and userData Secrets and writes nothing to the API:
// what it did comes back in Built, for the controller to report.
type Builder struct {
	// APIReader reads what the manager does not cache: the image catalog and
	// userData Secrets.
	APIReader client.Reader
	// Namespace is the operator's namespace, where the image catalog lives.
	Namespace string
	// SerialLogDir is the folder on each node where guests' serial consoles go.
	SerialLogDir string
}

// Built is what Build made.
type Built struct {
	Domain provider.Domain
	// CloudInitAttached says whether the cloud-init disk is on the domain;
	// when not, CloudInitNote says why (the hypervisor cannot take uploads)
	// and the VM runs without it.
	CloudInitAttached bool
	CloudInitNote     string
}

// PrepareTarget makes the VM's disks on a migration's target node (its root
// disk on the same image, its cloud-init disk), as a start there would, so
// that a live migration only copies what the guest changed.
func (b *Builder) PrepareTarget(ctx context.Context, vm *novacronv1.VirtualMachine, devices novacronv1.DeviceAssignment, hvObj *novacronv1.Hypervisor, hv provider.Hypervisor) error {
	_, err := b.Build(ctx, vm, devices, hvObj, hv)
	return err
}

// Build makes the VM's disks on the hypervisor of node hvObj and returns its
// domain, with the devices novacron-scheduler assigned it there.
func (b *Builder) Build(ctx context.Context, vm *novacronv1.VirtualMachine, devices novacronv1.DeviceAssignment, hvObj *novacronv1.Hypervisor, hv provider.Hypervisor) (Built, error) {
	spec := &vm.Spec.Template.Spec
	catalog, err := b.loadCatalog(ctx)
	if err != nil {
		return Built{}, err
	}
	img, err := catalog.Resolve(spec.Image.Source)
	if errors.Is(err, ErrBrokenEntry) {
		return Built{}, SpecErrorf(novacronv1.ReasonBadImageCatalog, "%v", err)
	}
	if err != nil {
		return Built{}, SpecErrorf(novacronv1.ReasonImageNotFound, "%v", err)
	}
	if err := fitsHost(ctx, vm, hvObj, hv); err != nil {
		return Built{}, err
	}
	pool := hypervisors.Pool(hvObj)
	// Only on the VM's own node: a migration's target makes the disks under
	// the names the source's domain uses.
	ownNode := hvObj.Name == vm.Status.NodeName
	if err := AdoptLegacyVolumes(ctx, vm, ownNode && vm.Status.DomainDefined, pool, hv); err != nil {
		return Built{}, err
	}
	if ownNode {
		if err := unclaimedLegacyDisk(ctx, vm, pool, hvObj.Name, hv); err != nil {
			return Built{}, err
		}
	}
	rootPath, err := b.rootDisk(ctx, vm, img, pool, hvObj, hv)
	if err != nil {
		return Built{}, err
	}
	d := provider.Domain{
		Name:          DomainName(vm),
		Type:          hvObj.Spec.DomainType,
		UUID:          string(vm.UID),
		VCPUs:         spec.Resources.CPU,
		MemoryBytes:   spec.Resources.Memory.Value(),
		Disks:         []provider.Disk{{Path: rootPath, Format: "qcow2"}},
		SerialLogPath: SerialLogPath(b.SerialLogDir, vm),
		Description:   fmt.Sprintf("NovaCron VirtualMachine %s/%s", vm.Namespace, vm.Name),
	}
	if err := directBoot(ctx, &d, img, spec.Image.Source, pool, hvObj, hv); err != nil {
		return Built{}, err
	}
	bridges, err := b.bridges(ctx, vm)
	if err != nil {
		return Built{}, err
	}
	if err := passThrough(&d, vm, devices, bridges, hvObj.Name); err != nil {
		return Built{}, err
	}
	built := Built{Domain: d}
	if err := b.attachCloudInit(ctx, vm, pool, hv, &built); err != nil {
		return Built{}, err
	}
	return built, nil
}

// fitsHost refuses a VM bigger than its whole node.
func fitsHost(ctx context.Context, vm *novacronv1.VirtualMachine, hvObj *novacronv1.Hypervisor, hv provider.Hypervisor) error {
	res := vm.Spec.Template.Spec.Resources
	info, err := hv.Info(ctx)
	if err != nil {
		return err
	}
	if res.CPU > info.CPUs {
		return SpecErrorf(novacronv1.ReasonNodeTooSmall, "the VM asks for %d vCPUs but node %s has only %d CPUs; lower spec.template.spec.resources.cpu", res.CPU, hvObj.Name, info.CPUs)
	}
	if res.Memory.Value() > info.MemoryBytes {
		return SpecErrorf(novacronv1.ReasonNodeTooSmall, "the VM asks for %s of memory but node %s has only %s; lower spec.template.spec.resources.memory", res.Memory.String(), hvObj.Name, resource.NewQuantity(info.MemoryBytes, resource.BinarySI).String())
	}
	return nil
}

// rootDisk makes the VM's root disk, a copy-on-write overlay of its image.
func (b *Builder) rootDisk(ctx context.Context, vm *novacronv1.VirtualMachine, img Image, pool string, hvObj *novacronv1.Hypervisor, hv provider.Hypervisor) (string, error) {
	size := defaultDiskSize
	if d := vm.Spec.Template.Spec.Resources.Disk; d != nil {
		size = *d
	}
	path, err := hv.EnsureVolume(ctx, provider.Volume{
		Pool: pool, Name: RootVolumeName(vm), CapacityBytes: size.Value(), Format: "qcow2",
		BackingVolume: img.Volume, BackingFormat: img.Format,
	})
	if err != nil && (strings.Contains(err.Error(), "is not in storage pool") || strings.Contains(err.Error(), "does not exist on the hypervisor")) {
		return "", SpecErrorf(novacronv1.ReasonImageNotOnNode, "%v (node %s)", err, hvObj.Name)
	}
	if errors.Is(err, provider.ErrNoSpace) {
		return "", SpecErrorf(novacronv1.ReasonPoolFull, "spec.template.spec.resources.disk: %s is more than node %s can hold: %v; lower it, or free space in the pool", size.String(), hvObj.Name, err)
	}
	return path, err
}

// directBoot points the domain at the image's kernel and initrd, when it has
// them.
func directBoot(ctx context.Context, d *provider.Domain, img Image, source, pool string, hvObj *novacronv1.Hypervisor, hv provider.Hypervisor) error {
	if img.Kernel == "" {
		return nil
	}
	var err error
	if d.Kernel, err = hv.VolumePath(ctx, pool, img.Kernel); err != nil {
		return SpecErrorf(novacronv1.ReasonImageNotOnNode, "kernel of image %q: %v (node %s)", source, err, hvObj.Name)
	}
	if img.Initrd != "" {
		if d.Initrd, err = hv.VolumePath(ctx, pool, img.Initrd); err != nil {
			return SpecErrorf(novacronv1.ReasonImageNotOnNode, "initrd of image %q: %v (node %s)", source, err, hvObj.Name)
		}
	}
	d.Cmdline = img.Cmdline
	return nil
}

// bridges maps the VM's bridge networks to hypervisor networks, from its
// namespace's NetworkAttachmentDefinitions (devices.BridgeNetwork).
func (b *Builder) bridges(ctx context.Context, vm *novacronv1.VirtualMachine) (map[string]string, error) {
	nets, err := devices.BridgeNetworks(ctx, devices.ReadNetworks(b.APIReader), vm)
	if devices.IsVMError(err) {
		return nil, SpecErrorf(novacronv1.ReasonNetworkNotFound, "%v", err)
	}
	return nets, err
}

// passThrough gives the domain its NICs, with the assigned VFs on sr-iov
// networks, and its assigned GPUs; a VM whose devices were not assigned (its
// pod was not placed by novacron-scheduler) is refused.
func passThrough(d *provider.Domain, vm *novacronv1.VirtualMachine, devices novacronv1.DeviceAssignment, bridges map[string]string, node string) error {
	spec := &vm.Spec.Template.Spec
	for _, n := range spec.Networks {
		nic := provider.NIC{MAC: StableMAC(string(vm.UID), n.Name), Network: bridges[n.Name]}
		if n.Type != novacronv1.NetworkTypeSRIOV {
			// A tenant's guest sends only as itself: no other VM's (or the
			// node's) MAC or address, no ARP for them.
			nic.CleanTraffic = true
			if ip := n.IPv4; ip != nil && ip.Method == novacronv1.IPv4Static {
				nic.IP, _, _ = strings.Cut(ip.Address, "/")
			}
		}
		if n.Type == novacronv1.NetworkTypeSRIOV {
			vf, ok := devices.VFs[n.Name]
			if !ok {
				return SpecErrorf(novacronv1.ReasonDevicesNotAssigned, "sr-iov network %q has no VF assigned on node %s; the launcher pod must be placed by novacron-scheduler, which assigns VFs", n.Name, node)
			}
			nic.PCIAddress = vf
		}
		d.NICs = append(d.NICs, nic)
	}
	want := int32(0)
	for _, dev := range spec.Devices {
		want += dev.Count
	}
	if int32(len(devices.GPUs)) != want {
		return SpecErrorf(novacronv1.ReasonDevicesNotAssigned, "the VM asks for %d GPUs but %d are assigned on node %s; the launcher pod must be placed by novacron-scheduler, which assigns devices", want, len(devices.GPUs), node)
	}
	for _, g := range devices.GPUs {
		d.HostDevices = append(d.HostDevices, g.PCIAddress)
	}
	return nil
}

// userData reads the VM's cloud-init user-data from its spec or its Secret.
func (b *Builder) userData(ctx context.Context, vm *novacronv1.VirtualMachine) (string, error) {
	spec := &vm.Spec.Template.Spec
	ref := spec.UserDataSecretRef
	if ref == nil {
		return spec.UserData, nil
	}
	key := ref.Key
	if key == "" {
		key = "userdata"
	}
	var secret corev1.Secret
	if err := b.APIReader.Get(ctx, client.ObjectKey{Namespace: vm.Namespace, Name: ref.Name}, &secret); err != nil {
		if apierrors.IsNotFound(err) {
			return "", SpecErrorf(novacronv1.ReasonUserDataSecretNotFound, "spec.template.spec.userDataSecretRef: Secret %s/%s does not exist", vm.Namespace, ref.Name)
		}
		return "", err
	}
	data, ok := secret.Data[key]
	if !ok {
		return "", SpecErrorf(novacronv1.ReasonUserDataSecretNotFound, "spec.template.spec.userDataSecretRef: Secret %s/%s has no key %q", vm.Namespace, ref.Name, key)
	}
	return string(data), nil
}

// attachCloudInit writes the VM's NoCloud disk to the node and adds it to the
// domain. A hypervisor that cannot take uploads (the test driver) runs the VM
// without it, and Built says so.
func (b *Builder) attachCloudInit(ctx context.Context, vm *novacronv1.VirtualMachine, pool string, hv provider.Hypervisor, built *Built) error {
	ud, err := b.userData(ctx, vm)
	if err != nil {
		return err
	}
	var nics []CloudInitNIC
	for _, n := range vm.Spec.Template.Spec.Networks {
		nics = append(nics, CloudInitNIC{Network: n, MAC: StableMAC(string(vm.UID), n.Name)})
	}
	data, err := NewCloudInit(string(vm.UID), vm.Name, ud, nics)
	if err != nil {
		return SpecErrorf(novacronv1.ReasonBadCloudInit, "%v", err)
	}
	iso, err := data.ISO()
	if err != nil {
		return err
	}
	path, err := hv.UploadVolume(ctx, pool, CloudInitVolumeName(vm), iso)
	if errors.Is(err, provider.ErrUnsupported) {
		built.CloudInitNote = fmt.Sprintf("the hypervisor cannot receive the cloud-init disk (%v); the VM runs without it", err)
		return nil
	}
	if err != nil {
		return err
	}
	built.Domain.Disks = append(built.Domain.Disks, provider.Disk{Path: path, Format: "raw", CDROM: true})
	built.CloudInitAttached = true
	return nil
}

// loadCatalog reads the image catalog ConfigMap.
func (b *Builder) loadCatalog(ctx context.Context) (Catalog, error) {
	var cm corev1.ConfigMap
	if err := b.APIReader.Get(ctx, client.ObjectKey{Namespace: b.Namespace, Name: CatalogConfigMap}, &cm); err != nil {
		return Catalog{}, fmt.Errorf("reading image catalog %s/%s: %w", b.Namespace, CatalogConfigMap, err)
	}
	// A broken entry fails only the VMs naming it (Resolve).
	c, _ := ParseCatalog(cm.Data)
	return c, nil
}
