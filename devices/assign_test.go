package devices

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"k8s.io/apimachinery/pkg/util/sets"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

func gpuHost() *novacronv1.Hypervisor {
	hv := &novacronv1.Hypervisor{}
	hv.Status.GPUs = []novacronv1.GPU{
		{Vendor: "nvidia", Model: "tesla-t4", PCIAddress: "0000:3b:00.0", NUMANode: 0},
		{Vendor: "nvidia", Model: "tesla-t4", PCIAddress: "0000:3c:00.0", NUMANode: 1},
		{Vendor: "nvidia", Model: "tesla-t4", PCIAddress: "0000:3d:00.0", NUMANode: 1},
		{Vendor: "nvidia", Model: "a100", PCIAddress: "0000:af:00.0", NUMANode: 1},
	}
	hv.Status.SRIOV = []novacronv1.SRIOVPool{{ResourceName: "intel.com/sriov_data", VirtualFunctions: []novacronv1.VirtualFunction{
		{PCIAddress: "0000:5e:02.1", NUMANode: 0}, {PCIAddress: "0000:5e:02.2", NUMANode: 1},
	}}}
	return hv
}

func TestAssignBestFitKeepsLargerSetsWhole(t *testing.T) {
	// One T4 comes from NUMA node 0, where it is alone, keeping node 1's pair.
	a, reason := Assign(&Request{GPUs: []GPURequest{{Vendor: "nvidia", Model: "tesla-t4", Count: 1}}}, gpuHost(), sets.New[string](), false)
	assert.Empty(t, reason)
	assert.Equal(t, []novacronv1.AssignedDevice{{Type: "gpu", Vendor: "nvidia", Model: "tesla-t4", PCIAddress: "0000:3b:00.0"}}, a.GPUs)

	// Two come from node 1, where two sit together.
	a, _ = Assign(&Request{GPUs: []GPURequest{{Vendor: "nvidia", Model: "tesla-t4", Count: 2}}}, gpuHost(), sets.New[string](), false)
	assert.Equal(t, []string{"0000:3c:00.0", "0000:3d:00.0"}, pcis(a.GPUs))
}

func TestAssignNeverReusesAndSaysWhy(t *testing.T) {
	used := sets.New("0000:3b:00.0", "0000:3c:00.0")
	_, reason := Assign(&Request{GPUs: []GPURequest{{Vendor: "nvidia", Model: "tesla-t4", Count: 2}}}, gpuHost(), used, false)
	assert.Equal(t, "1/3 tesla-t4 free, 2 needed", reason)

	a, reason := Assign(&Request{GPUs: []GPURequest{{Vendor: "nvidia", Count: 2}}}, gpuHost(), used, false)
	assert.Empty(t, reason, "any nvidia model will do")
	assert.ElementsMatch(t, []string{"0000:3d:00.0", "0000:af:00.0"}, pcis(a.GPUs))

	_, reason = Assign(&Request{VFs: []VFRequest{{Network: "data", ResourceName: "intel.com/sriov_data"}}}, gpuHost(), sets.New("0000:5e:02.1", "0000:5e:02.2"), false)
	assert.Equal(t, "0 VFs free in intel.com/sriov_data for network data", reason)
}

func TestAssignNUMAAlignment(t *testing.T) {
	req := &Request{GPUs: []GPURequest{{Vendor: "nvidia", Model: "a100", Count: 1}}, VFs: []VFRequest{{Network: "data", ResourceName: "intel.com/sriov_data"}}}
	a, reason := Assign(req, gpuHost(), sets.New[string](), true)
	assert.Empty(t, reason)
	assert.Equal(t, map[string]string{"data": "0000:5e:02.2"}, a.VFs, "the VF on the A100's NUMA node")

	_, reason = Assign(req, gpuHost(), sets.New("0000:5e:02.2"), true)
	assert.Contains(t, reason, "on any one NUMA node")
	_, reason = Assign(req, gpuHost(), sets.New("0000:5e:02.2"), false)
	assert.Empty(t, reason, "without alignment any VF will do")
}

func pcis(ds []novacronv1.AssignedDevice) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.PCIAddress)
	}
	return out
}

func TestUnsatisfiableSaysWhatTheClusterHas(t *testing.T) {
	gpu1, gpu2, plain := gpuHost(), gpuHost(), &novacronv1.Hypervisor{}
	gpu1.Name, gpu2.Name, plain.Name = "gpu-1", "gpu-2", "compute-1"
	hvs := []*novacronv1.Hypervisor{plain, gpu1, gpu2}
	t4 := func(n int) *Request {
		return &Request{GPUs: []GPURequest{{Vendor: "nvidia", Model: "tesla-t4", Count: n}}}
	}

	assert.Empty(t, Unsatisfiable(t4(3), hvs), "three on one node: possible once they are free")
	assert.Equal(t, "no node has 4 tesla-t4; the most on one node is 3 (gpu-1)", Unsatisfiable(t4(4), hvs))
	assert.Equal(t, "no node has nvidia a100-nonexistent GPUs; the nodes have: nvidia a100 (gpu-1, gpu-2), nvidia tesla-t4 (gpu-1, gpu-2)",
		Unsatisfiable(&Request{GPUs: []GPURequest{{Vendor: "nvidia", Model: "a100-nonexistent", Count: 1}}}, hvs))
	assert.Equal(t, "no node has nvidia GPUs; the nodes have: no GPUs at all", Unsatisfiable(&Request{GPUs: []GPURequest{{Vendor: "nvidia", Count: 1}}}, []*novacronv1.Hypervisor{plain}))
	assert.Empty(t, Unsatisfiable(&Request{VFs: []VFRequest{{Network: "data", ResourceName: "intel.com/sriov_data"}}}, hvs))
	assert.Equal(t, "no node has VFs in pool intel.com/other (sr-iov network data)", Unsatisfiable(&Request{VFs: []VFRequest{{Network: "data", ResourceName: "intel.com/other"}}}, hvs))

	// A node without any such GPU says so, not "0/0 free".
	_, reason := Assign(t4(1), plain, nil, false)
	assert.Equal(t, "no tesla-t4", reason)
}
