package migration

import (
	"fmt"
	"math"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

// Resources is an amount of a node's room for VMs, counted the way
// novacron-scheduler counts it. It keeps two ledgers, because the scheduler
// checks a VM twice:
//   - VCPUs and Memory (bytes) are VM sizes, counted against the Hypervisor's
//     capacity times its overcommit (Hypervisor.VMCapacity; the VMPlacement
//     plugin);
//   - PodCPU (cores) and PodMemory (bytes) are launcher pods' requests, the
//     VM's size over the cluster's allocation ratios plus QEMU's memory
//     overhead, counted against the Node's allocatable (the upstream
//     NodeResourcesFit plugin).
//
// A capacity whose pod ledger is zero (a Hypervisor without a Node, or the
// VMPlacement plugin itself, which leaves that ledger to NodeResourcesFit) is
// checked by VM sizes alone. The drain's evacuation estimate, the rebalancer
// and the scheduler all decide "does it fit" by this one model.
type Resources struct {
	VCPUs, Memory     float64
	PodCPU, PodMemory float64
}

// Plus is r and o together.
func (r Resources) Plus(o Resources) Resources {
	return Resources{VCPUs: r.VCPUs + o.VCPUs, Memory: r.Memory + o.Memory, PodCPU: r.PodCPU + o.PodCPU, PodMemory: r.PodMemory + o.PodMemory}
}

// Minus is r without o.
func (r Resources) Minus(o Resources) Resources {
	return Resources{VCPUs: r.VCPUs - o.VCPUs, Memory: r.Memory - o.Memory, PodCPU: r.PodCPU - o.PodCPU, PodMemory: r.PodMemory - o.PodMemory}
}

// Load is the share of capacity that used takes by its dominant resource:
// 0 for an empty node, 1 for a full one, above 1 for an overfull one. A VM
// ledger of no capacity counts as infinitely loaded (nothing fits there).
func (used Resources) Load(capacity Resources) float64 {
	l := max(share(used.VCPUs, capacity.VCPUs), share(used.Memory, capacity.Memory))
	if capacity.PodCPU > 0 {
		l = max(l, share(used.PodCPU, capacity.PodCPU))
	}
	if capacity.PodMemory > 0 {
		l = max(l, share(used.PodMemory, capacity.PodMemory))
	}
	return l
}

func share(used, capacity float64) float64 {
	if capacity <= 0 {
		return math.Inf(1)
	}
	return used / capacity
}

// Short says what a node with used of capacity taken lacks for a VM of size
// need, in the words the scheduler's rejections use, or "" when it fits.
func Short(capacity, used, need Resources) string {
	switch {
	case used.VCPUs+need.VCPUs > capacity.VCPUs:
		return fmt.Sprintf("%d/%d vCPUs free, %d needed", int64(max(capacity.VCPUs-used.VCPUs, 0)), int64(capacity.VCPUs), int64(need.VCPUs))
	case used.Memory+need.Memory > capacity.Memory:
		return fmt.Sprintf("%dMi/%dMi of VM memory free, %dMi needed", int64(max(capacity.Memory-used.Memory, 0))>>20, int64(capacity.Memory)>>20, int64(need.Memory)>>20)
	case capacity.PodCPU > 0 && used.PodCPU+need.PodCPU > capacity.PodCPU:
		return fmt.Sprintf("%.1f/%.1f CPUs of the node free for launcher pods, %.1f needed", max(capacity.PodCPU-used.PodCPU, 0), capacity.PodCPU, need.PodCPU)
	case capacity.PodMemory > 0 && used.PodMemory+need.PodMemory > capacity.PodMemory:
		return fmt.Sprintf("%dMi/%dMi of the node's memory free for launcher pods (QEMU overhead included), %dMi needed",
			int64(max(capacity.PodMemory-used.PodMemory, 0))>>20, int64(capacity.PodMemory)>>20, int64(need.PodMemory)>>20)
	}
	return ""
}

// HeldOn names the nodes where a VM's launcher pods hold capacity, as the
// scheduler sees them: its node while it has a bound launcher pod (a stopped
// VM has none), and a migration's target node while it moves there.
func HeldOn(v *novacronv1.VirtualMachine) []string {
	var nodes []string
	if v.Status.NodeName != "" && v.Status.LauncherPod != "" {
		nodes = append(nodes, v.Status.NodeName)
	}
	if st := v.Status.MigrationState; st != nil && st.TargetNode != "" && st.TargetNode != v.Status.NodeName {
		nodes = append(nodes, st.TargetNode)
	}
	return nodes
}
