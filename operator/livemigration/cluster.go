package livemigration

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/migration"
	"github.com/novacron/operator/operator/launcher"
	"github.com/novacron/operator/operator/usage"
)

// The drain's evacuation estimate and the rebalancer see the cluster through
// migration's capacity model; this file reads the cluster into it.

// footprint is what a VM takes from its node: its size and its launcher pod's
// requests (cfg), or, given its measured use, that use in both.
func footprint(v *novacronv1.VirtualMachine, cfg launcher.Config, measured *usage.Usage) migration.Resources {
	res := v.Spec.Template.Spec.Resources
	cpu, mem := float64(res.CPU), float64(res.Memory.Value())
	if measured != nil {
		cpu, mem = measured.Cores, measured.MemoryBytes
	}
	podCPU, podMem := cfg.Requests(res.CPU, cpu, mem)
	return migration.Resources{VCPUs: cpu, Memory: mem, PodCPU: podCPU, PodMemory: podMem}
}

// readNodes is every Hypervisor's node in the capacity model, with what the
// VMs holding capacity there take (size). A node that is drained, or has no
// Node object, takes no VMs.
func readNodes(ctx context.Context, c client.Reader, vms []novacronv1.VirtualMachine, size func(*novacronv1.VirtualMachine) migration.Resources) ([]migration.Node, error) {
	var hvs novacronv1.HypervisorList
	if err := c.List(ctx, &hvs); err != nil {
		return nil, err
	}
	nodes := make([]migration.Node, 0, len(hvs.Items))
	idx := map[string]int{}
	for i := range hvs.Items {
		h := &hvs.Items[i]
		capCPU, capMem := h.VMCapacity()
		n := migration.Node{Name: h.Name, CPUModel: h.Status.CPUModel, Target: true,
			Capacity: migration.Resources{VCPUs: float64(capCPU), Memory: float64(capMem)}}
		node := &corev1.Node{}
		err := c.Get(ctx, client.ObjectKey{Name: h.Name}, node)
		if err == nil {
			n.Capacity.PodCPU = node.Status.Allocatable.Cpu().AsApproximateFloat64()
			n.Capacity.PodMemory = float64(node.Status.Allocatable.Memory().Value())
		}
		if err != nil || migration.Draining(node) != "" {
			n.Target = false
		}
		idx[h.Name] = len(nodes)
		nodes = append(nodes, n)
	}
	for i := range vms {
		for _, name := range migration.HeldOn(&vms[i]) {
			if ni, ok := idx[name]; ok {
				nodes[ni].Used = nodes[ni].Used.Plus(size(&vms[i]))
			}
		}
	}
	return nodes, nil
}

// snapshotsByVM names every VM's snapshots (migration.Blockers needs them).
func snapshotsByVM(ctx context.Context, c client.Reader) (map[string][]string, error) {
	var snaps novacronv1.VirtualMachineSnapshotList
	if err := c.List(ctx, &snaps); err != nil {
		return nil, err
	}
	return migration.SnapshotsByVM(snaps.Items), nil
}

func key(v *novacronv1.VirtualMachine) string { return v.Namespace + "/" + v.Name }
