package discovery

import (
	"fmt"
	"sort"
	"strings"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/dynamic-resource-allocation/deviceattribute"
	"k8s.io/utils/ptr"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

// DriverName is the DRA driver NovaCron's node agent publishes devices as.
// Device attributes without a domain are its own: devices.novacron.io/type.
const DriverName = "devices.novacron.io"

// Device kinds, in the type attribute; the DeviceClasses in
// manifests/devices select on them.
const (
	TypeGPU = "gpu"
	TypeVF  = "vf"
)

// TaintVanished marks a device that was published and is no longer on the
// PCI bus. It stays published, NoSchedule (NoExecute would evict the
// launcher pod of a VM that holds it), until it comes back.
const TaintVanished = DriverName + "/vanished"

// TaintUnhealthy marks a device that should take no new VM. It is always
// NoSchedule: NoExecute would evict the launcher pod and so kill the VM
// that holds the device.
const TaintUnhealthy = DriverName + "/unhealthy"

// HypervisorStatus is the device inventory of the node's Hypervisor status,
// as the scheduler, admission and `kubectl get hv -o yaml` read it.
func HypervisorStatus(inv Inventory) novacronv1.HypervisorStatus {
	st := novacronv1.HypervisorStatus{NUMANodes: int32(inv.NUMANodes)}
	for _, g := range inv.GPUs {
		st.GPUs = append(st.GPUs, novacronv1.GPU{Vendor: g.Vendor, Model: g.Model, PCIAddress: g.PCIAddress,
			NUMANode: int32(g.NUMANode), UUID: g.UUID, MemoryBytes: g.MemoryBytes})
	}
	pools := map[string]*novacronv1.SRIOVPool{}
	var order []string
	for _, vf := range inv.VFs {
		key := vf.ResourceName + "/" + vf.PFAddress
		p, ok := pools[key]
		if !ok {
			p = &novacronv1.SRIOVPool{ResourceName: vf.ResourceName, PhysicalFunction: vf.PF}
			pools[key] = p
			order = append(order, key)
		}
		p.VirtualFunctions = append(p.VirtualFunctions, novacronv1.VirtualFunction{PCIAddress: vf.PCIAddress, NUMANode: int32(vf.NUMANode)})
	}
	for _, k := range order {
		st.SRIOV = append(st.SRIOV, *pools[k])
	}
	return st
}

// MaxDevicesPerSlice keeps every slice within the API's limit for slices
// with taints (64; 128 without).
const MaxDevicesPerSlice = 64

// Chunks splits devices into slices' worth; no devices is one empty slice
// (an empty pool says the driver runs and the node has nothing to offer).
func Chunks(devs []resourceapi.Device) [][]resourceapi.Device {
	out := [][]resourceapi.Device{nil}
	for i := 0; i < len(devs); i += MaxDevicesPerSlice {
		if i == 0 {
			out = out[:0]
		}
		out = append(out, devs[i:min(i+MaxDevicesPerSlice, len(devs))])
	}
	return out
}

// ResourceSlices are the node's DRA ResourceSlices as the agent publishes
// them: one pool named after the node holding Devices.
func ResourceSlices(node, sysfsRoot string, inv Inventory) ([]*resourceapi.ResourceSlice, error) {
	devs, err := Devices(sysfsRoot, inv)
	if err != nil {
		return nil, err
	}
	chunks := Chunks(devs)
	var out []*resourceapi.ResourceSlice
	for _, c := range chunks {
		out = append(out, &resourceapi.ResourceSlice{
			TypeMeta:   metav1.TypeMeta{APIVersion: resourceapi.SchemeGroupVersion.String(), Kind: "ResourceSlice"},
			ObjectMeta: metav1.ObjectMeta{GenerateName: node + "-" + DriverName + "-"},
			Spec: resourceapi.ResourceSliceSpec{
				Driver:   DriverName,
				Pool:     resourceapi.ResourcePool{Name: node, Generation: 1, ResourceSliceCount: int64(len(chunks))},
				NodeName: ptr.To(node),
				Devices:  c,
			},
		})
	}
	return out, nil
}

// Devices are the offered devices as DRA devices: the standard attributes
// (read from the same sysfs by k8s.io/dynamic-resource-allocation's
// deviceattribute) and NovaCron's own.
func Devices(sysfsRoot string, inv Inventory) ([]resourceapi.Device, error) {
	var out []resourceapi.Device
	for _, g := range inv.GPUs {
		d, err := device(TypeGPU, g.PCIAddress, sysfsRoot)
		if err != nil {
			return nil, err
		}
		str(d, "vendor", g.Vendor)
		str(d, "model", g.Model)
		str(d, "vendorID", g.VendorID)
		str(d, "deviceID", g.DeviceID)
		str(d, "uuid", g.UUID)
		str(d, "driver", g.Driver)
		str(d, "iommuGroup", g.IOMMUGroup)
		if g.MemoryBytes > 0 {
			d.Capacity = map[resourceapi.QualifiedName]resourceapi.DeviceCapacity{"memory": {Value: *resource.NewQuantity(g.MemoryBytes, resource.BinarySI)}}
		}
		if g.Unhealthy != "" {
			d.Taints = []resourceapi.DeviceTaint{{Key: TaintUnhealthy, Effect: resourceapi.DeviceTaintEffectNoSchedule}}
		}
		out = append(out, *d)
	}
	for _, vf := range inv.VFs {
		d, err := device(TypeVF, vf.PCIAddress, sysfsRoot)
		if err != nil {
			return nil, err
		}
		str(d, "vendorID", vf.VendorID)
		str(d, "deviceID", vf.DeviceID)
		str(d, "driver", vf.Driver)
		str(d, "iommuGroup", vf.IOMMUGroup)
		str(d, "resourceName", vf.ResourceName)
		str(d, "pf", vf.PF)
		str(d, "pfPCIAddress", vf.PFAddress)
		d.Attributes["linkUp"] = resourceapi.DeviceAttribute{BoolValue: ptr.To(vf.LinkUp)}
		out = append(out, *d)
	}
	return out, nil
}

// DeviceName is a device's name in the slice: its kind and PCI address as a
// DNS label (gpu-0000-3b-00-0).
func DeviceName(kind, pciAddress string) string {
	return kind + "-" + strings.NewReplacer(":", "-", ".", "-").Replace(pciAddress)
}

func device(kind, addr, sysfsRoot string) (*resourceapi.Device, error) {
	d := &resourceapi.Device{Name: DeviceName(kind, addr), Attributes: map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{
		"type": {StringValue: ptr.To(kind)},
	}}
	fsys := deviceattribute.WithFSFromRoot(sysfsRoot)
	bus, err := deviceattribute.GetPCIBusIDAttribute(addr)
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", addr, err)
	}
	d.Attributes[bus.Name] = bus.Value
	root, err := deviceattribute.GetPCIeRootAttributeByPCIBusID(addr, fsys)
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", addr, err)
	}
	d.Attributes[root.Name] = root.Value
	// A device with no NUMA affinity publishes no numaNode (the library
	// refuses one): -1 would match every other such device.
	if numa, err := deviceattribute.GetNUMANodeAttributeByPCIBusID(addr, deviceattribute.ScalarAttribute, fsys); err == nil {
		d.Attributes[numa.Name] = numa.Value
	}
	return d, nil
}

func str(d *resourceapi.Device, name resourceapi.QualifiedName, v string) {
	if v != "" {
		d.Attributes[name] = resourceapi.DeviceAttribute{StringValue: ptr.To(v)}
	}
}

// WithoutOthers drops the devices another DRA driver already publishes on
// the node (by the standard pciBusID attribute): two drivers offering one
// GPU would let the scheduler allocate it twice.
func WithoutOthers(inv Inventory, node string, others []resourceapi.ResourceSlice) Inventory {
	taken := map[string]string{}
	for _, s := range others {
		if s.Spec.Driver == DriverName || s.Spec.NodeName == nil || *s.Spec.NodeName != node {
			continue
		}
		for _, d := range s.Spec.Devices {
			if a, ok := d.Attributes[deviceattribute.StandardDeviceAttributePCIBusID]; ok && a.StringValue != nil {
				taken[*a.StringValue] = s.Spec.Driver
			}
		}
	}
	out := inv
	out.GPUs, out.VFs, out.Skipped = nil, nil, append([]Skipped(nil), inv.Skipped...)
	for _, g := range inv.GPUs {
		if drv, ok := taken[g.PCIAddress]; ok {
			out.Skipped = append(out.Skipped, Skipped{PCIAddress: g.PCIAddress, Why: "published by DRA driver " + drv})
			continue
		}
		out.GPUs = append(out.GPUs, g)
	}
	for _, vf := range inv.VFs {
		if drv, ok := taken[vf.PCIAddress]; ok {
			out.Skipped = append(out.Skipped, Skipped{PCIAddress: vf.PCIAddress, Why: "published by DRA driver " + drv})
			continue
		}
		out.VFs = append(out.VFs, vf)
	}
	sort.SliceStable(out.Skipped, func(i, j int) bool { return out.Skipped[i].PCIAddress < out.Skipped[j].PCIAddress })
	return out
}

// Taints are the taints on the node's devices.novacron.io devices, by PCI
// address: what the operator shows on VMs holding them.
func Taints(slices []resourceapi.ResourceSlice, node string) map[string][]resourceapi.DeviceTaint {
	out := map[string][]resourceapi.DeviceTaint{}
	for _, s := range slices {
		if s.Spec.Driver != DriverName || s.Spec.NodeName == nil || *s.Spec.NodeName != node {
			continue
		}
		for _, d := range s.Spec.Devices {
			if a, ok := d.Attributes[deviceattribute.StandardDeviceAttributePCIBusID]; ok && a.StringValue != nil && len(d.Taints) > 0 {
				out[*a.StringValue] = append(out[*a.StringValue], d.Taints...)
			}
		}
	}
	return out
}
