package devices

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/dynamic-resource-allocation/cel"
	"k8s.io/dynamic-resource-allocation/structured"
	"sigs.k8s.io/yaml"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/devices/discovery"
	"github.com/novacron/operator/devices/sysfs"
)

// classes are the DeviceClasses as manifests/node ships them.
type classes map[string]*resourceapi.DeviceClass

func (c classes) List() ([]*resourceapi.DeviceClass, error) {
	var out []*resourceapi.DeviceClass
	for _, dc := range c {
		out = append(out, dc)
	}
	return out, nil
}

func (c classes) Get(name string) (*resourceapi.DeviceClass, error) { return c[name], nil }

func shippedClasses(t *testing.T) classes {
	raw, err := os.ReadFile("../manifests/node/deviceclasses.yaml")
	require.NoError(t, err)
	out := classes{}
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		dc := &resourceapi.DeviceClass{}
		require.NoError(t, yaml.Unmarshal([]byte(doc), dc))
		out[dc.Name] = dc
	}
	require.Contains(t, out, GPUClass)
	require.Contains(t, out, VFClass)
	return out
}

// node is a machine with a T4 on NUMA node 0, two T4s and an A100 on NUMA
// node 1, and an E810 on NUMA node 0 with two VFs, published by
// novacron-node's discovery.
func node(t *testing.T) []*resourceapi.ResourceSlice {
	root := filepath.Join(t.TempDir(), "sys")
	gpu := func(addr, device string, numa int) sysfs.PCIDevice {
		return sysfs.PCIDevice{Address: addr, Vendor: "10de", Device: device, Class: "030200", NUMANode: numa, Driver: "vfio-pci"}
	}
	m := sysfs.Machine{NUMANodes: 2, Devices: []sysfs.PCIDevice{
		gpu("0000:3b:00.0", "1eb8", 0), gpu("0000:af:00.0", "1eb8", 1), gpu("0000:b0:00.0", "1eb8", 1), gpu("0000:d8:00.0", "20b0", 1),
		{Address: "0000:5e:00.0", Vendor: "8086", Device: "1593", Class: "020000", NUMANode: 0, Driver: "ice", NetDevs: []string{"ens1f0"}, LinkUp: true},
		{Address: "0000:5e:01.0", Vendor: "8086", Device: "1889", Class: "020000", NUMANode: 0, Driver: "vfio-pci", PhysFn: "0000:5e:00.0"},
		{Address: "0000:5e:01.1", Vendor: "8086", Device: "1889", Class: "020000", NUMANode: 0, Driver: "vfio-pci", PhysFn: "0000:5e:00.0"},
	}}
	require.NoError(t, sysfs.Write(root, m))
	cfg := discovery.Config{Models: map[string]string{"10de:1eb8": "tesla-t4", "10de:20b0": "a100"},
		SRIOV: []discovery.SRIOVConfig{{PF: "ens1f0", ResourceName: "intel.com/sriov_data"}}}
	inv, err := discovery.Discover(root, cfg, &discovery.PCIIDs{}, nil)
	require.NoError(t, err)
	slices, err := discovery.ResourceSlices("node-1", root, inv)
	require.NoError(t, err)
	return slices
}

// allocate runs DRA's own allocator (what kube-scheduler's DynamicResources
// plugin runs) on the VM's claim; nil when the node cannot take it.
func allocate(t *testing.T, req *Request, alignNUMA bool, taken ...string) []resourceapi.DeviceRequestAllocationResult {
	t.Helper()
	ctx := context.Background()
	slices := node(t)
	used := sets.New[structured.DeviceID]()
	for _, pci := range taken {
		used.Insert(structured.MakeDeviceID(discovery.DriverName, "node-1", discovery.DeviceName(discovery.TypeGPU, pci)))
	}
	alloc, err := structured.NewAllocator(ctx, structured.Features{}, structured.AllocatedState{AllocatedDevices: used}, shippedClasses(t), slices, cel.NewCache(10, cel.Features{}))
	require.NoError(t, err)
	claim := &resourceapi.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Name: "vm-devices", Namespace: "team", UID: "claim"}, Spec: ClaimSpec(req, alignNUMA)}
	results, err := alloc.Allocate(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}, []*resourceapi.ResourceClaim{claim})
	require.NoError(t, err)
	if len(results) == 0 {
		return nil
	}
	return results[0].Devices.Results
}

func assigned(t *testing.T, req *Request, results []resourceapi.DeviceRequestAllocationResult) novacronv1.DeviceAssignment {
	t.Helper()
	var slices []resourceapi.ResourceSlice
	for _, s := range node(t) {
		slices = append(slices, *s)
	}
	a, err := FromAllocation(req, results, "node-1", slices)
	require.NoError(t, err)
	return a
}

// The claim a VM's spec becomes selects, through DRA's allocator and the
// shipped DeviceClasses, exactly the kind of device it asks for, and the
// allocation maps back to the devices' PCI addresses.
func TestTheClaimTakesTheDevicesTheVMAsksFor(t *testing.T) {
	req := &Request{GPUs: []GPURequest{{Vendor: "nvidia", Model: "a100", Count: 1}}, VFs: []VFRequest{{Network: "data", ResourceName: "intel.com/sriov_data"}}}
	a := assigned(t, req, allocate(t, req, false))
	require.Len(t, a.GPUs, 1)
	assert.Equal(t, novacronv1.AssignedDevice{Type: novacronv1.DeviceTypeGPU, Vendor: "nvidia", Model: "a100", PCIAddress: "0000:d8:00.0"}, a.GPUs[0])
	assert.Contains(t, []string{"0000:5e:01.0", "0000:5e:01.1"}, a.VFs["data"])

	three := &Request{GPUs: []GPURequest{{Vendor: "nvidia", Model: "tesla-t4", Count: 3}}}
	a = assigned(t, three, allocate(t, three, false))
	assert.ElementsMatch(t, []string{"0000:3b:00.0", "0000:af:00.0", "0000:b0:00.0"}, a.PCIAddresses(), "every T4, never the A100")
	assert.Nil(t, allocate(t, three, false, "0000:af:00.0"), "an allocated T4 is not free")

	none := &Request{VFs: []VFRequest{{Network: "fast", ResourceName: "mellanox.com/cx6"}}}
	assert.Nil(t, allocate(t, none, false), "a pool the node does not have")
}

// With NUMA alignment two T4s come from one NUMA node (node 1 has two), a T4
// and the VF only where both are (node 0); without it, from anywhere.
func TestNUMAAlignmentIsAClaimConstraint(t *testing.T) {
	two := &Request{GPUs: []GPURequest{{Vendor: "nvidia", Model: "tesla-t4", Count: 2}}}
	a := assigned(t, two, allocate(t, two, true))
	assert.ElementsMatch(t, []string{"0000:af:00.0", "0000:b0:00.0"}, a.PCIAddresses())
	assert.Nil(t, allocate(t, two, true, "0000:b0:00.0"), "one T4 left on each NUMA node")
	assert.Len(t, allocate(t, two, false, "0000:b0:00.0"), 2, "unaligned, they may straddle")

	withVF := &Request{GPUs: []GPURequest{{Vendor: "nvidia", Model: "tesla-t4", Count: 1}}, VFs: []VFRequest{{Network: "data", ResourceName: "intel.com/sriov_data"}}}
	a = assigned(t, withVF, allocate(t, withVF, true))
	assert.Equal(t, "0000:3b:00.0", a.GPUs[0].PCIAddress, "the T4 beside the VFs")
	assert.Nil(t, allocate(t, withVF, true, "0000:3b:00.0"))
}

// What the claim's allocation says is held to the VM's request and the
// node's slices: a device in no slice, a request the VM did not make, one
// VF twice.
func TestAnAllocationThatDoesNotAddUpIsRefused(t *testing.T) {
	var slices []resourceapi.ResourceSlice
	for _, s := range node(t) {
		slices = append(slices, *s)
	}
	req := &Request{GPUs: []GPURequest{{Vendor: "nvidia", Count: 1}}, VFs: []VFRequest{{Network: "data", ResourceName: "intel.com/sriov_data"}}}
	res := func(request, device string) resourceapi.DeviceRequestAllocationResult {
		return resourceapi.DeviceRequestAllocationResult{Request: request, Driver: discovery.DriverName, Pool: "node-1", Device: device}
	}
	for why, results := range map[string][]resourceapi.DeviceRequestAllocationResult{
		"in no ResourceSlice":      {res("gpu-0", "gpu-0000-00-17-0")},
		"does not ask for":         {res("gpu-1", "gpu-0000-3b-00-0")},
		"more than one device":     {res("vf-0", "vf-0000-5e-01-0"), res("vf-0", "vf-0000-5e-01-1")},
		"in no ResourceSlice of n": {{Request: "gpu-0", Driver: "gpu.nvidia.com", Pool: "node-1", Device: "gpu-0000-3b-00-0"}},
	} {
		_, err := FromAllocation(req, results, "node-1", slices)
		assert.ErrorContains(t, err, strings.TrimSuffix(why, " of n"), why)
	}
	_, err := FromAllocation(req, []resourceapi.DeviceRequestAllocationResult{res("gpu-0", "gpu-0000-3b-00-0")}, "node-2", slices)
	assert.ErrorContains(t, err, "no ResourceSlice of node node-2", "another node's devices")
}

func TestTheSchedulerReadsAnAllocatedDevicesAddressFromItsName(t *testing.T) {
	pci, ok := AllocatedPCIAddress(discovery.DriverName, discovery.DeviceName(discovery.TypeVF, "0000:5e:01.1"))
	assert.True(t, ok)
	assert.Equal(t, "0000:5e:01.1", pci)
	for _, c := range [][2]string{{"gpu.nvidia.com", "gpu-0000-3b-00-0"}, {discovery.DriverName, "disk-0000-00-17-0"}, {discovery.DriverName, "gpu-3b"}} {
		_, ok := AllocatedPCIAddress(c[0], c[1])
		assert.False(t, ok, c)
	}
}
