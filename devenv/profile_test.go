package devenv

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

func TestDefaultProfile(t *testing.T) {
	p, err := ParseProfile(defaultProfile)
	require.NoError(t, err)
	nodes := p.Expand(5)
	var names []string
	for _, n := range nodes {
		names = append(names, n.Name)
	}
	assert.Equal(t, []string{"compute-1", "gpu-1", "sriov-1", "compute-2", "gpu-2"}, names)
	assert.Len(t, p.Expand(0), 3, "one node of each kind by default")

	gpu := nodes[1]
	assert.Len(t, gpu.Allocatable(), 3, "CPU, memory and pods: its GPUs are DRA devices, not extended resources")
	st, slices, err := gpu.publication()
	require.NoError(t, err)
	require.Len(t, slices, 1, "the GPUs published as the agent publishes them")
	assert.Equal(t, "gpu-1", slices[0].Spec.Pool.Name)
	require.Len(t, slices[0].Spec.Devices, 2)
	assert.Equal(t, "gpu-0000-3b-00-0", slices[0].Spec.Devices[0].Name)
	require.Len(t, st.GPUs, 2)
	assert.Equal(t, novacronv1.GPU{Vendor: "nvidia", Model: "tesla-t4", PCIAddress: "0000:3b:00.0", NUMANode: 0}, st.GPUs[0], "as novacron-node's discovery finds it")
	assert.Equal(t, novacronv1.GPU{Vendor: "nvidia", Model: "tesla-t4", PCIAddress: "0000:3c:00.0", NUMANode: 1}, st.GPUs[1])
	assert.Equal(t, int32(2), st.NUMANodes)

	sriov, err := nodes[2].HypervisorStatus()
	require.NoError(t, err)
	require.Len(t, sriov.SRIOV, 1)
	assert.Equal(t, "ens1f0", sriov.SRIOV[0].PhysicalFunction)
	assert.Equal(t, "intel.com/sriov_data", sriov.SRIOV[0].ResourceName)
	assert.Len(t, sriov.SRIOV[0].VirtualFunctions, 4)
	seen := map[string]bool{}
	for _, vf := range sriov.SRIOV[0].VirtualFunctions {
		assert.False(t, seen[vf.PCIAddress], "VF addresses are distinct")
		seen[vf.PCIAddress] = true
	}
	_, slices, err = nodes[2].publication()
	require.NoError(t, err)
	require.Len(t, slices, 1)
	assert.Len(t, slices[0].Spec.Devices, 4)
	_, slices, err = nodes[0].publication()
	require.NoError(t, err)
	assert.Empty(t, slices, "a node without devices publishes no slice")
}

func TestProfileErrorsNameTheField(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"nodes: []", "nodes: at least one"},
		{"nodes: [{name: Big_Node, cpus: 4, memory: 8Gi}]", "nodes[0].name"},
		{"nodes: [{name: a, cpus: 0, memory: 8Gi}]", "nodes[0].cpus"},
		{"nodes: [{name: a, cpus: 4, memory: 8Mi}]", "nodes[0].memory"},
		{"nodes: [{name: a, cpus: 4, memory: 8Gi}, {name: a, cpus: 4, memory: 8Gi}]", "nodes[1].name \"a\": used twice"},
		{"nodes: [{name: a, cpus: 4, memory: 8Gi, gpus: [{vendor: nvidia, count: 1}]}]", "nodes[0].gpus[0]: vendor and model"},
		{"nodes: [{name: a, cpus: 4, memory: 8Gi, gpus: [{vendor: nvidia, model: t4, count: 0}]}]", "nodes[0].gpus[0].count"},
		{"nodes: [{name: a, cpus: 4, memory: 8Gi, gpus: [{vendor: acme, model: t4, count: 1}]}]", `nodes[0].gpus[0].vendor "acme"`},
		{"nodes: [{name: a, cpus: 4, memory: 8Gi, gpus: [{vendor: nvidia, model: Tesla T4, count: 1}]}]", `nodes[0].gpus[0].model "Tesla T4"`},
		{"nodes: [{name: a, cpus: 4, memory: 8Gi, sriov: [{vfs: 2}]}]", "nodes[0].sriov[0].resourceName"},
		{"nodes: [{name: a, cpus: 4, memory: 8Gi, sriov: [{resourceName: x/y, vfs: 100}]}]", "nodes[0].sriov[0].vfs"},
		{"nodes: [{name: a, cpus: 4, memory: 8Gi, overcommit: {cpu: \"0\"}}]", "nodes[0].overcommit.cpu"},
		{"nodes: [{name: a, cpus: 4, memory: 8Gi, gpu: []}]", `unknown field "gpu"`},
	} {
		_, err := ParseProfile([]byte(c.yaml))
		require.Error(t, err, c.yaml)
		assert.Contains(t, err.Error(), c.want, c.yaml)
	}
}
