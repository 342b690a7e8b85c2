package devices

import (
	"fmt"
	"sort"
	"strings"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

// Unsatisfiable says why no node of hvs could ever hold the request, however
// many VMs left it, or "" when one could: a GPU model no node has (naming
// the models there are), more GPUs of a kind than any one node has, or a VF
// pool no node has. A VM asking so waits for a node that has them; this
// says so at once instead of a reason per node.
func Unsatisfiable(req *Request, hvs []*novacronv1.Hypervisor) string {
	for _, g := range req.GPUs {
		most, where := 0, ""
		for _, hv := range hvs {
			n := 0
			for _, d := range hv.Status.GPUs {
				if g.matches(d) {
					n++
				}
			}
			if n > most {
				most, where = n, hv.Name
			}
		}
		switch {
		case most == 0:
			return fmt.Sprintf("no node has %s GPUs; the nodes have: %s", describe(g), gpuModels(hvs))
		case most < g.Count:
			return fmt.Sprintf("no node has %d %s; the most on one node is %d (%s)", g.Count, g, most, where)
		}
	}
	for _, vf := range req.VFs {
		found := false
		for _, hv := range hvs {
			for _, p := range hv.Status.SRIOV {
				found = found || (p.ResourceName == vf.ResourceName && len(p.VirtualFunctions) > 0)
			}
		}
		if !found {
			return fmt.Sprintf("no node has VFs in pool %s (sr-iov network %s)", vf.ResourceName, vf.Network)
		}
	}
	return ""
}

func describe(g GPURequest) string {
	if g.Model == "" {
		return g.Vendor
	}
	return g.Vendor + " " + g.Model
}

// gpuModels lists the cluster's GPU kinds with the nodes that have them.
func gpuModels(hvs []*novacronv1.Hypervisor) string {
	nodes := map[string][]string{}
	for _, hv := range hvs {
		seen := map[string]bool{}
		for _, d := range hv.Status.GPUs {
			k := d.Vendor + " " + d.Model
			if !seen[k] {
				seen[k] = true
				nodes[k] = append(nodes[k], hv.Name)
			}
		}
	}
	if len(nodes) == 0 {
		return "no GPUs at all"
	}
	kinds := make([]string, 0, len(nodes))
	for k, on := range nodes {
		sort.Strings(on)
		if len(on) > 3 {
			on = append(on[:3], fmt.Sprintf("%d more", len(on)-3))
		}
		kinds = append(kinds, fmt.Sprintf("%s (%s)", k, strings.Join(on, ", ")))
	}
	sort.Strings(kinds)
	return strings.Join(kinds, ", ")
}
