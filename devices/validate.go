package devices

import (
	"fmt"

	"k8s.io/apimachinery/pkg/util/sets"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

// Validate says what is wrong with an assignment of devices to a VM on a
// node, or "": every GPU must be one of the node's, of a kind the VM asked
// for and as many as it asked; every VF one of the node's, from the pool the
// network names; none taken by another VM there, none twice. The assignment
// arrives on a pod, which more than the scheduler can write: this is what
// keeps it to devices the VM may have.
func Validate(a novacronv1.DeviceAssignment, req *Request, hv *novacronv1.Hypervisor, taken sets.Set[string]) string {
	seen := sets.New[string]()
	use := func(pci string) string {
		switch {
		case seen.Has(pci):
			return fmt.Sprintf("%s is assigned twice", pci)
		case taken.Has(pci):
			return fmt.Sprintf("%s is another VM's", pci)
		}
		seen.Insert(pci)
		return ""
	}
	gpus := map[string]novacronv1.GPU{}
	for _, g := range hv.Status.GPUs {
		gpus[g.PCIAddress] = g
	}
	left := make([]int, len(req.GPUs))
	for i, g := range req.GPUs {
		left[i] = g.Count
	}
	for _, d := range a.GPUs {
		g, ok := gpus[d.PCIAddress]
		if !ok {
			return fmt.Sprintf("GPU %s is not one of node %s's GPUs", d.PCIAddress, hv.Name)
		}
		if why := use(d.PCIAddress); why != "" {
			return why
		}
		i := matching(req.GPUs, left, g)
		if i < 0 {
			return fmt.Sprintf("GPU %s (%s %s) is not of a kind the VM asks for, or more than it asks", d.PCIAddress, g.Vendor, g.Model)
		}
		left[i]--
	}
	for i, n := range left {
		if n > 0 {
			return fmt.Sprintf("%d %s short", n, req.GPUs[i])
		}
	}
	if len(a.VFs) != len(req.VFs) {
		return fmt.Sprintf("%d VFs assigned for %d sr-iov networks", len(a.VFs), len(req.VFs))
	}
	for _, vf := range req.VFs {
		pci, ok := a.VFs[vf.Network]
		if !ok {
			return fmt.Sprintf("sr-iov network %s has no VF", vf.Network)
		}
		if !inPool(hv, vf.ResourceName, pci) {
			return fmt.Sprintf("VF %s for network %s is not in node %s's pool %s", pci, vf.Network, hv.Name, vf.ResourceName)
		}
		if why := use(pci); why != "" {
			return why
		}
	}
	return ""
}

// matching is the request a GPU counts towards, -1 when none has room.
func matching(reqs []GPURequest, left []int, d novacronv1.GPU) int {
	for i, g := range reqs {
		if left[i] > 0 && g.matches(d) {
			return i
		}
	}
	return -1
}

func inPool(hv *novacronv1.Hypervisor, pool, pci string) bool {
	for _, p := range hv.Status.SRIOV {
		if p.ResourceName != pool {
			continue
		}
		for _, vf := range p.VirtualFunctions {
			if vf.PCIAddress == pci {
				return true
			}
		}
	}
	return false
}
