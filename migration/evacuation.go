package migration

import (
	corev1 "k8s.io/api/core/v1"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

// Draining says why the node is being drained (EvacuationMaintenance when
// tainted TaintMaintenance, EvacuationCordoned when cordoned), or "".
func Draining(n *corev1.Node) string {
	for _, t := range n.Spec.Taints {
		if t.Key == novacronv1.TaintMaintenance {
			return novacronv1.EvacuationMaintenance
		}
	}
	if n.Spec.Unschedulable {
		return novacronv1.EvacuationCordoned
	}
	return ""
}

// EstimateTargets says where each VM leaving node from (in order) would go:
// among the nodes that may take VMs and have from's CPU model, the one with
// the most free vCPUs that has room for it, counting the VMs placed before it.
// A VM no node has room for is missing from the answer. It is an estimate for
// a dry run: the scheduler makes the real choice when a VM moves. Inputs are
// not changed.
func EstimateTargets(from Node, nodes []Node, leaving []VM) map[string]string {
	var cands []*Node
	for i := range nodes {
		if n := nodes[i]; n.Name != from.Name && n.Target && n.CPUModel == from.CPUModel {
			cands = append(cands, &n)
		}
	}
	out := map[string]string{}
	for _, v := range leaving {
		var best *Node
		for _, c := range cands {
			if Short(c.Capacity, c.Used, v.Size) != "" {
				continue
			}
			if best == nil || c.Capacity.VCPUs-c.Used.VCPUs > best.Capacity.VCPUs-best.Used.VCPUs {
				best = c
			}
		}
		if best != nil {
			out[v.Key] = best.Name
			best.Used = best.Used.Plus(v.Size)
		}
	}
	return out
}
