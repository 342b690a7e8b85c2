package vm

import (
	"context"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/cloudinit"
	"github.com/novacron/operator/operator/hypervisors"
	"github.com/novacron/operator/operator/images"
	"github.com/novacron/operator/operator/provider"
)

// defaultDiskSize is a VM's root disk when resources.disk is not set.
var defaultDiskSize = resource.MustParse("10Gi")

// specError is a problem with the VM's spec (or with what it refers to) that
// retrying cannot fix; the VM shows it and waits for a change.
type specError struct {
	reason string
	err    error
}

func (e *specError) Error() string { return e.err.Error() }
func (e *specError) Unwrap() error { return e.err }

func specErrorf(reason, format string, args ...any) error {
	return &specError{reason: reason, err: fmt.Errorf(format, args...)}
}

// DomainName is the hypervisor domain of a VM. Kubernetes names cannot hold
// "_", so it cannot collide across namespaces.
func DomainName(vm *novacronv1.VirtualMachine) string {
	return vm.Namespace + "_" + vm.Name
}

// rootVolumeName is the VM's root disk volume in the node's storage pool.
func rootVolumeName(vm *novacronv1.VirtualMachine) string {
	return DomainName(vm) + "-root.qcow2"
}

// cloudInitVolumeName is the VM's cloud-init NoCloud disk.
func cloudInitVolumeName(vm *novacronv1.VirtualMachine) string {
	return DomainName(vm) + "-cidata.iso"
}

// userData reads the VM's cloud-init user-data from its spec or its Secret.
func (r *Reconciler) userData(ctx context.Context, vm *novacronv1.VirtualMachine) (string, error) {
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
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: vm.Namespace, Name: ref.Name}, &secret); err != nil {
		if apierrors.IsNotFound(err) {
			return "", specErrorf("UserDataSecretNotFound", "spec.template.spec.userDataSecretRef: Secret %s/%s does not exist", vm.Namespace, ref.Name)
		}
		return "", err
	}
	data, ok := secret.Data[key]
	if !ok {
		return "", specErrorf("UserDataSecretNotFound", "spec.template.spec.userDataSecretRef: Secret %s/%s has no key %q", vm.Namespace, ref.Name, key)
	}
	return string(data), nil
}

// attachCloudInit writes the VM's NoCloud disk to the node and adds it to the
// domain. A hypervisor that cannot take uploads (the test driver) runs the VM
// without it, and the CloudInit condition says so.
func (r *Reconciler) attachCloudInit(ctx context.Context, vm *novacronv1.VirtualMachine, pool string, hv provider.Hypervisor, d *provider.Domain) error {
	ud, err := r.userData(ctx, vm)
	if err != nil {
		return err
	}
	var nics []cloudinit.Interface
	for _, n := range vm.Spec.Template.Spec.Networks {
		nics = append(nics, cloudinit.Interface{Network: n, MAC: stableMAC(string(vm.UID), n.Name)})
	}
	data, err := cloudinit.New(string(vm.UID), vm.Name, ud, nics)
	if err != nil {
		return specErrorf("BadCloudInit", "%v", err)
	}
	iso, err := data.ISO()
	if err != nil {
		return err
	}
	path, err := hv.UploadVolume(ctx, pool, cloudInitVolumeName(vm), iso)
	if errors.Is(err, provider.ErrUnsupported) {
		r.setCondition(vm, novacronv1.VMConditionCloudInit, metav1.ConditionFalse, "Unsupported", fmt.Sprintf("the hypervisor cannot receive the cloud-init disk (%v); the VM runs without it", err))
		return nil
	}
	if err != nil {
		return err
	}
	d.Disks = append(d.Disks, provider.Disk{Path: path, Format: "raw", CDROM: true})
	r.setCondition(vm, novacronv1.VMConditionCloudInit, metav1.ConditionTrue, "Attached", "cloud-init NoCloud disk attached")
	return nil
}

// deviceAssignment reads the devices novacron-scheduler chose for the pod.
func deviceAssignment(pod *corev1.Pod) (novacronv1.DeviceAssignment, error) {
	a, _, err := novacronv1.ParseDeviceAssignment(pod.Annotations)
	if err != nil {
		return a, specErrorf("BadDeviceAssignment", "launcher pod %s: %v", pod.Name, err)
	}
	return a, nil
}

// vfPools finds, for each sr-iov network, the VF pool its
// NetworkAttachmentDefinition names, so the launcher pod can request a VF.
func (r *Reconciler) vfPools(ctx context.Context, vm *novacronv1.VirtualMachine) (map[string]string, error) {
	pools := map[string]string{}
	for i, n := range vm.Spec.Template.Spec.Networks {
		if n.Type != novacronv1.NetworkTypeSRIOV {
			continue
		}
		nad := &unstructured.Unstructured{}
		nad.SetGroupVersionKind(novacronv1.NetworkAttachmentDefinition)
		if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: vm.Namespace, Name: n.Name}, nad); err != nil {
			if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
				return nil, specErrorf("NetworkNotFound", "spec.template.spec.networks[%d]: sr-iov network %q needs a NetworkAttachmentDefinition %s/%s", i, n.Name, vm.Namespace, n.Name)
			}
			return nil, err
		}
		pool := nad.GetAnnotations()[novacronv1.AnnotationResourceName]
		if pool == "" {
			return nil, specErrorf("NetworkNotFound", "spec.template.spec.networks[%d]: NetworkAttachmentDefinition %s/%s names no VF pool (k8s.v1.cni.cncf.io/resourceName)", i, vm.Namespace, n.Name)
		}
		pools[n.Name] = pool
	}
	return pools, nil
}

// loadCatalog reads the image catalog ConfigMap.
func (r *Reconciler) loadCatalog(ctx context.Context) (images.Catalog, error) {
	var cm corev1.ConfigMap
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: images.ConfigMapName}, &cm); err != nil {
		return nil, fmt.Errorf("reading image catalog %s/%s: %w", r.Namespace, images.ConfigMapName, err)
	}
	c, err := images.Parse(cm.Data)
	if err != nil {
		return nil, specErrorf("BadImageCatalog", "%v", err)
	}
	return c, nil
}

// VolumeNames are the volumes the VM has in its node's storage pool.
func VolumeNames(vm *novacronv1.VirtualMachine) []string {
	return []string{rootVolumeName(vm), cloudInitVolumeName(vm)}
}

// PrepareTarget makes the VM's disks on a migration's target node (its root
// disk on the same image, its cloud-init disk), as a start there would, so
// that a live migration only copies what the guest changed.
func (r *Reconciler) PrepareTarget(ctx context.Context, vm *novacronv1.VirtualMachine, pod *corev1.Pod, hvObj *novacronv1.Hypervisor, hv provider.Hypervisor) error {
	_, err := r.buildDomain(ctx, vm, pod, hvObj, hv)
	return err
}

// buildDomain makes the VM's disks on the hypervisor and returns its domain.
func (r *Reconciler) buildDomain(ctx context.Context, vm *novacronv1.VirtualMachine, pod *corev1.Pod, hvObj *novacronv1.Hypervisor, hv provider.Hypervisor) (provider.Domain, error) {
	spec := &vm.Spec.Template.Spec
	catalog, err := r.loadCatalog(ctx)
	if err != nil {
		return provider.Domain{}, err
	}
	img, err := catalog.Resolve(spec.Image.Source)
	if err != nil {
		return provider.Domain{}, specErrorf("ImageNotFound", "%v", err)
	}
	info, err := hv.Info(ctx)
	if err != nil {
		return provider.Domain{}, err
	}
	if spec.Resources.CPU > info.CPUs {
		return provider.Domain{}, specErrorf("NodeTooSmall", "the VM asks for %d vCPUs but node %s has only %d CPUs; lower spec.template.spec.resources.cpu", spec.Resources.CPU, hvObj.Name, info.CPUs)
	}
	if spec.Resources.Memory.Value() > info.MemoryBytes {
		return provider.Domain{}, specErrorf("NodeTooSmall", "the VM asks for %s of memory but node %s has only %s; lower spec.template.spec.resources.memory", spec.Resources.Memory.String(), hvObj.Name, resource.NewQuantity(info.MemoryBytes, resource.BinarySI).String())
	}
	assignment, err := deviceAssignment(pod)
	if err != nil {
		return provider.Domain{}, err
	}

	disk := defaultDiskSize
	if spec.Resources.Disk != nil {
		disk = *spec.Resources.Disk
	}
	pool := hypervisors.Pool(hvObj)
	rootPath, err := hv.EnsureVolume(ctx, provider.Volume{
		Pool: pool, Name: rootVolumeName(vm), CapacityBytes: disk.Value(), Format: "qcow2",
		BackingVolume: img.Volume, BackingFormat: img.Format,
	})
	if err != nil {
		if strings.Contains(err.Error(), "is not in storage pool") || strings.Contains(err.Error(), "does not exist on the hypervisor") {
			return provider.Domain{}, specErrorf("ImageNotOnNode", "%v (node %s)", err, hvObj.Name)
		}
		return provider.Domain{}, err
	}

	d := provider.Domain{
		Name:        DomainName(vm),
		Type:        hvObj.Spec.DomainType,
		UUID:        string(vm.UID),
		VCPUs:       spec.Resources.CPU,
		MemoryBytes: spec.Resources.Memory.Value(),
		Disks:       []provider.Disk{{Path: rootPath, Format: "qcow2"}},
		// libvirt keeps QEMU's own log as <domain>.log in the same folder.
		SerialLogPath: r.SerialLogDir + "/" + DomainName(vm) + "-serial.log",
		Description:   fmt.Sprintf("NovaCron VirtualMachine %s/%s", vm.Namespace, vm.Name),
	}
	if img.Kernel != "" {
		if d.Kernel, err = hv.VolumePath(ctx, pool, img.Kernel); err != nil {
			return provider.Domain{}, specErrorf("ImageNotOnNode", "kernel of image %q: %v (node %s)", spec.Image.Source, err, hvObj.Name)
		}
		if img.Initrd != "" {
			if d.Initrd, err = hv.VolumePath(ctx, pool, img.Initrd); err != nil {
				return provider.Domain{}, specErrorf("ImageNotOnNode", "initrd of image %q: %v (node %s)", spec.Image.Source, err, hvObj.Name)
			}
		}
		d.Cmdline = img.Cmdline
	}
	for _, n := range spec.Networks {
		nic := provider.NIC{MAC: stableMAC(string(vm.UID), n.Name), Network: n.Name}
		if n.Type == novacronv1.NetworkTypeSRIOV {
			vf, ok := assignment.VFs[n.Name]
			if !ok {
				return provider.Domain{}, specErrorf("DevicesNotAssigned", "sr-iov network %q has no VF assigned on node %s; the launcher pod must be placed by novacron-scheduler, which assigns VFs", n.Name, hvObj.Name)
			}
			nic.PCIAddress = vf
		}
		d.NICs = append(d.NICs, nic)
	}
	want := int32(0)
	for _, dev := range spec.Devices {
		want += dev.Count
	}
	if int32(len(assignment.GPUs)) != want {
		return provider.Domain{}, specErrorf("DevicesNotAssigned", "the VM asks for %d GPUs but %d are assigned on node %s; the launcher pod must be placed by novacron-scheduler, which assigns devices", want, len(assignment.GPUs), hvObj.Name)
	}
	for _, g := range assignment.GPUs {
		d.HostDevices = append(d.HostDevices, g.PCIAddress)
	}
	if err := r.attachCloudInit(ctx, vm, pool, hv, &d); err != nil {
		return provider.Domain{}, err
	}
	return d, nil
}

// observedInterfaces describes the VM's NICs for its status.
func observedInterfaces(vm *novacronv1.VirtualMachine, assignment novacronv1.DeviceAssignment) []novacronv1.InterfaceStatus {
	var out []novacronv1.InterfaceStatus
	for _, n := range vm.Spec.Template.Spec.Networks {
		s := novacronv1.InterfaceStatus{Name: n.Name, MAC: stableMAC(string(vm.UID), n.Name), PCIAddress: assignment.VFs[n.Name]}
		if n.IPv4 != nil && n.IPv4.Method == novacronv1.IPv4Static {
			ip, _, _ := strings.Cut(n.IPv4.Address, "/")
			s.IPAddress, s.IPAddresses = ip, []string{ip}
		}
		out = append(out, s)
	}
	return out
}
