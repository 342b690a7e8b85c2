package migration

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

func TestShortSpeaksAsTheScheduler(t *testing.T) {
	capacity := Resources{VCPUs: 16, Memory: 64 * gib}
	assert.Empty(t, Short(capacity, Resources{VCPUs: 14, Memory: 60 * gib}, Resources{VCPUs: 2, Memory: 4 * gib}), "exactly full fits")
	assert.Equal(t, "1/16 vCPUs free, 2 needed", Short(capacity, Resources{VCPUs: 15}, Resources{VCPUs: 2}))
	assert.Equal(t, "1024Mi/65536Mi of VM memory free, 4096Mi needed", Short(capacity, Resources{Memory: 63 * gib}, Resources{Memory: 4 * gib}))
	assert.Equal(t, "0/16 vCPUs free, 1 needed", Short(capacity, Resources{VCPUs: 20}, Resources{VCPUs: 1}), "never a negative count")

	// The pod ledger counts only where the capacity has one.
	pods := capacity
	pods.PodCPU, pods.PodMemory = 16, 8*gib
	need := Resources{VCPUs: 2, Memory: 8 * gib, PodCPU: 2, PodMemory: 8*gib + 144<<20}
	assert.Empty(t, Short(capacity, Resources{}, need), "the VM ledger alone: fits")
	assert.Contains(t, Short(pods, Resources{}, need), "of the node's memory free for launcher pods (QEMU overhead included)")
}

func TestLoadIsTheDominantShare(t *testing.T) {
	capacity := Resources{VCPUs: 16, Memory: 64 * gib}
	assert.InDelta(t, 0.75, Resources{VCPUs: 12, Memory: 16 * gib}.Load(capacity), 1e-9)
	assert.InDelta(t, 0.5, Resources{VCPUs: 2, Memory: 32 * gib}.Load(capacity), 1e-9)
	capacity.PodMemory = 16 * gib
	assert.InDelta(t, 0.9, Resources{VCPUs: 2, Memory: 8 * gib, PodMemory: 14.4 * gib}.Load(capacity), 1e-9, "the launcher pods' ledger counts too")
	assert.True(t, math.IsInf(Resources{VCPUs: 1}.Load(Resources{}), 1), "a node with no room is infinitely loaded")
}

// A VM holds capacity where its launcher pods are: none while stopped, on
// both nodes while it migrates.
func TestHeldOnFollowsTheLauncherPods(t *testing.T) {
	v := &novacronv1.VirtualMachine{}
	v.Status.NodeName = "node-1"
	assert.Empty(t, HeldOn(v), "stopped: its node keeps its disks, not its capacity")
	v.Status.LauncherPod = "web-launcher"
	assert.Equal(t, []string{"node-1"}, HeldOn(v))
	v.Status.MigrationState = &novacronv1.MigrationState{MigrationName: "m", SourceNode: "node-1"}
	assert.Equal(t, []string{"node-1"}, HeldOn(v), "no target yet")
	v.Status.MigrationState.TargetNode = "node-2"
	assert.Equal(t, []string{"node-1", "node-2"}, HeldOn(v))
}
