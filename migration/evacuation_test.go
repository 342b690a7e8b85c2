package migration

import (
	"testing"

	"github.com/stretchr/testify/assert"
	corev1 "k8s.io/api/core/v1"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

func TestDraining(t *testing.T) {
	n := &corev1.Node{}
	assert.Empty(t, Draining(n))
	n.Spec.Unschedulable = true
	assert.Equal(t, novacronv1.EvacuationCordoned, Draining(n))
	n.Spec.Taints = []corev1.Taint{{Key: novacronv1.TaintMaintenance, Effect: corev1.TaintEffectNoSchedule}}
	assert.Equal(t, novacronv1.EvacuationMaintenance, Draining(n), "the taint says more than the cordon")
}

func TestEstimateTargetsFillsTheFreestNodesFirst(t *testing.T) {
	from := Node{Name: "drained", CPUModel: "m"}
	nodes := []Node{
		from,
		{Name: "roomy", CPUModel: "m", Capacity: Resources{VCPUs: 16, Memory: 64 * gib}, Used: Resources{VCPUs: 8}, Target: true},
		{Name: "small", CPUModel: "m", Capacity: Resources{VCPUs: 8, Memory: 64 * gib}, Used: Resources{VCPUs: 2}, Target: true},
		{Name: "empty-but-cordoned", CPUModel: "m", Capacity: Resources{VCPUs: 64, Memory: 256 * gib}, Target: false},
		{Name: "other-model", CPUModel: "x", Capacity: Resources{VCPUs: 64, Memory: 256 * gib}, Target: true},
	}
	vms := []VM{
		{Key: "a", Size: Resources{VCPUs: 4, Memory: 8 * gib}},
		{Key: "b", Size: Resources{VCPUs: 4, Memory: 8 * gib}},
		{Key: "c", Size: Resources{VCPUs: 6, Memory: 8 * gib}},
		{Key: "huge", Size: Resources{VCPUs: 32, Memory: 8 * gib}},
	}
	got := EstimateTargets(from, nodes, vms)
	// a: roomy has 8 free, small 6 -> roomy (4 left); b: small has 6 -> small
	// (2 left); c: 6 needed, neither has it.
	assert.Equal(t, map[string]string{"a": "roomy", "b": "small"}, got)
	assert.Equal(t, 8.0, nodes[1].Used.VCPUs, "inputs are not changed")
}
