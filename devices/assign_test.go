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
