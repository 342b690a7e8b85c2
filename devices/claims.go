// Package devices is NovaCron's model of the host devices VMs get: the DRA
// claim a VM's GPUs and sr-iov networks become (and how its allocation maps
// back to PCI addresses), the rule that maps an sr-iov network to its VF
// pool, and the fit of a request on a node (free devices, optional NUMA
// alignment) the scheduler explains a node's refusal by. The scheduler, the
// operator, admission and `novacron dev` all decide by it, so they agree.
// novacron-node's discovery and publishing live below it (discovery, agent).
package devices

import (
	"fmt"
	"strconv"
	"strings"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/dynamic-resource-allocation/deviceattribute"
	"k8s.io/utils/ptr"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/devices/discovery"
)

// A VM's devices are DRA requests of its launcher pod: one claim, made from
// a ResourceClaimTemplate the operator writes for the VM, with a request per
// GPU entry of the spec and one per sr-iov network. kube-scheduler's
// DynamicResources plugin allocates them; the operator reads the allocation.

// ClaimName is the name of the launcher pod's claim entry (and of the
// container's use of it).
const ClaimName = "devices"

// DeviceClasses of NovaCron's device kinds (manifests/node/deviceclasses.yaml).
const (
	GPUClass = "gpu.devices.novacron.io"
	VFClass  = "vf.devices.novacron.io"
)

// gpuRequest and vfRequest name a claim's requests by their index in the
// Request: the spec's GPU entries and its sr-iov networks, in order. (A
// network's name with a prefix could pass the 63 characters a request name
// may have.)
func gpuRequest(i int) string { return "gpu-" + strconv.Itoa(i) }
func vfRequest(i int) string  { return "vf-" + strconv.Itoa(i) }

// ClaimSpec is the claim a VM's request becomes. With alignNUMA every device
// comes from one NUMA node (a constraint on the standard numaNode
// attribute, so DRA's allocator keeps to it; a device without NUMA affinity
// then fits no aligned VM).
func ClaimSpec(req *Request, alignNUMA bool) resourceapi.ResourceClaimSpec {
	var spec resourceapi.ResourceClaimSpec
	for i, g := range req.GPUs {
		sel := fmt.Sprintf("device.attributes[%q].vendor == %q", discovery.DriverName, g.Vendor)
		if g.Model != "" {
			sel += fmt.Sprintf(" && device.attributes[%q].model == %q", discovery.DriverName, g.Model)
		}
		spec.Devices.Requests = append(spec.Devices.Requests, resourceapi.DeviceRequest{Name: gpuRequest(i), Exactly: &resourceapi.ExactDeviceRequest{
			DeviceClassName: GPUClass, AllocationMode: resourceapi.DeviceAllocationModeExactCount, Count: int64(g.Count),
			Selectors: []resourceapi.DeviceSelector{{CEL: &resourceapi.CELDeviceSelector{Expression: sel}}},
		}})
	}
	for i, vf := range req.VFs {
		sel := fmt.Sprintf("device.attributes[%q].resourceName == %q", discovery.DriverName, vf.ResourceName)
		spec.Devices.Requests = append(spec.Devices.Requests, resourceapi.DeviceRequest{Name: vfRequest(i), Exactly: &resourceapi.ExactDeviceRequest{
			DeviceClassName: VFClass, AllocationMode: resourceapi.DeviceAllocationModeExactCount, Count: 1,
			Selectors: []resourceapi.DeviceSelector{{CEL: &resourceapi.CELDeviceSelector{Expression: sel}}},
		}})
	}
	n := len(req.VFs)
	for _, g := range req.GPUs {
		n += g.Count
	}
	if alignNUMA && n > 1 {
		spec.Devices.Constraints = []resourceapi.DeviceConstraint{{MatchAttribute: ptr.To(resourceapi.FullyQualifiedName(deviceattribute.StandardDeviceAttributeNUMANode))}}
	}
	return spec
}

// AlignsNUMA says whether a claim keeps all its devices on one NUMA node.
func AlignsNUMA(spec *resourceapi.ResourceClaimSpec) bool {
	for _, c := range spec.Devices.Constraints {
		if c.MatchAttribute != nil && string(*c.MatchAttribute) == string(deviceattribute.StandardDeviceAttributeNUMANode) {
			return true
		}
	}
	return false
}

// FromAllocation is the VM's devices as DRA allocated them on node: each
// result's device looked up in the node's ResourceSlices for its PCI
// address (the standard pciBusID attribute), GPUs from the gpu requests and
// each sr-iov network's VF from its request. It says what does not add up;
// Validate then holds the result against the node's inventory.
func FromAllocation(req *Request, results []resourceapi.DeviceRequestAllocationResult, node string, slices []resourceapi.ResourceSlice) (novacronv1.DeviceAssignment, error) {
	var a novacronv1.DeviceAssignment
	for _, r := range results {
		d, ok := findDevice(slices, node, r)
		if !ok {
			return a, fmt.Errorf("allocated device %s/%s/%s is in no ResourceSlice of node %s", r.Driver, r.Pool, r.Device, node)
		}
		pci := attr(d, deviceattribute.StandardDeviceAttributePCIBusID)
		if pci == "" {
			return a, fmt.Errorf("allocated device %s/%s/%s has no PCI address", r.Driver, r.Pool, r.Device)
		}
		kind, index, _ := strings.Cut(r.Request, "-")
		i, err := strconv.Atoi(index)
		switch {
		case err == nil && kind == "gpu" && i < len(req.GPUs):
			a.GPUs = append(a.GPUs, novacronv1.AssignedDevice{Type: novacronv1.DeviceTypeGPU,
				Vendor: attr(d, discovery.DriverName+"/vendor"), Model: attr(d, discovery.DriverName+"/model"), PCIAddress: pci})
		case err == nil && kind == "vf" && i < len(req.VFs):
			if a.VFs == nil {
				a.VFs = map[string]string{}
			}
			if _, twice := a.VFs[req.VFs[i].Network]; twice {
				return a, fmt.Errorf("request %s has more than one device", r.Request)
			}
			a.VFs[req.VFs[i].Network] = pci
		default:
			return a, fmt.Errorf("the claim has a request %s the VM does not ask for", r.Request)
		}
	}
	return a, nil
}

func findDevice(slices []resourceapi.ResourceSlice, node string, r resourceapi.DeviceRequestAllocationResult) (*resourceapi.Device, bool) {
	for i := range slices {
		s := &slices[i]
		if s.Spec.Driver != r.Driver || s.Spec.Pool.Name != r.Pool || s.Spec.NodeName == nil || *s.Spec.NodeName != node {
			continue
		}
		for j := range s.Spec.Devices {
			if s.Spec.Devices[j].Name == r.Device {
				return &s.Spec.Devices[j], true
			}
		}
	}
	return nil, false
}

// attr reads a string attribute by its qualified name; attributes in the
// driver's own domain may be published without it.
func attr(d *resourceapi.Device, name resourceapi.QualifiedName) string {
	if a, ok := d.Attributes[name]; ok && a.StringValue != nil {
		return *a.StringValue
	}
	if short, ok := strings.CutPrefix(string(name), discovery.DriverName+"/"); ok {
		if a, ok := d.Attributes[resourceapi.QualifiedName(short)]; ok && a.StringValue != nil {
			return *a.StringValue
		}
	}
	return ""
}

// AllocatedPCIAddress is the PCI address of a devices.novacron.io device
// by its name in the slice (DeviceName), so the scheduler can count a
// node's allocated devices without looking them up.
func AllocatedPCIAddress(driver, device string) (string, bool) {
	if driver != discovery.DriverName {
		return "", false
	}
	kind, rest, ok := strings.Cut(device, "-")
	if !ok || (kind != discovery.TypeGPU && kind != discovery.TypeVF) {
		return "", false
	}
	// gpu-0000-3b-00-0 -> 0000:3b:00.0
	parts := strings.Split(rest, "-")
	if len(parts) != 4 {
		return "", false
	}
	return parts[0] + ":" + parts[1] + ":" + parts[2] + "." + parts[3], true
}
