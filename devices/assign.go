package devices

import (
	"fmt"
	"sort"

	"k8s.io/apimachinery/pkg/util/sets"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

// Request is the devices one VM needs from a node.
type Request struct {
	GPUs []GPURequest
	// VFs are the VM's sr-iov networks, each with the VF pool (resource name)
	// its NetworkAttachmentDefinition names.
	VFs []VFRequest
}

// GPURequest asks for Count GPUs of a vendor (and model, when set).
type GPURequest struct {
	Vendor, Model string
	Count         int
}

// VFRequest asks for one VF from a pool for a network.
type VFRequest struct {
	Network, ResourceName string
}

// RequestFor is what a VM's spec asks for; pools maps each sr-iov network to
// its VF pool (VFPools).
func RequestFor(spec *novacronv1.VirtualMachineInstanceSpec, pools map[string]string) Request {
	var r Request
	for _, d := range spec.Devices {
		r.GPUs = append(r.GPUs, GPURequest{Vendor: d.Vendor, Model: d.Model, Count: int(d.Count)})
	}
	for _, n := range spec.Networks {
		if n.Type == novacronv1.NetworkTypeSRIOV {
			r.VFs = append(r.VFs, VFRequest{Network: n.Name, ResourceName: pools[n.Name]})
		}
	}
	return r
}

// HasDevices says whether the VM needs any device at all.
func (r *Request) HasDevices() bool { return len(r.GPUs) > 0 || len(r.VFs) > 0 }

func (g GPURequest) matches(d novacronv1.GPU) bool {
	return d.Vendor == g.Vendor && (g.Model == "" || d.Model == g.Model)
}

func (g GPURequest) String() string {
	if g.Model == "" {
		return g.Vendor + " GPU"
	}
	return g.Model
}

// Assign picks concrete devices on a node, or says why it cannot; used holds
// the PCI addresses already taken there. With alignNUMA every device comes
// from one NUMA node. Among the GPUs that fit it takes them from the NUMA node
// with the fewest free matching GPUs (best fit), so larger free sets stay
// whole for VMs that need them.
func Assign(req *Request, hv *novacronv1.Hypervisor, used sets.Set[string], alignNUMA bool) (novacronv1.DeviceAssignment, string) {
	numas := []int32{-2} // -2: any
	if alignNUMA && req.HasDevices() {
		numas = numaNodes(hv)
	}
	var lastReason string
	for _, numa := range numas {
		a, reason := assignOn(req, hv, used, numa)
		if reason == "" {
			return a, ""
		}
		lastReason = reason
	}
	if alignNUMA && len(numas) > 1 {
		return novacronv1.DeviceAssignment{}, lastReason + " on any one NUMA node"
	}
	return novacronv1.DeviceAssignment{}, lastReason
}

func numaNodes(hv *novacronv1.Hypervisor) []int32 {
	s := sets.New[int32]()
	for _, g := range hv.Status.GPUs {
		s.Insert(g.NUMANode)
	}
	for _, p := range hv.Status.SRIOV {
		for _, vf := range p.VirtualFunctions {
			s.Insert(vf.NUMANode)
		}
	}
	out := sets.List(s)
	if len(out) == 0 {
		return []int32{-2}
	}
	return out
}

func assignOn(req *Request, hv *novacronv1.Hypervisor, used sets.Set[string], numa int32) (novacronv1.DeviceAssignment, string) {
	var a novacronv1.DeviceAssignment
	taken := used.Clone()
	for _, g := range req.GPUs {
		// Free matching GPUs grouped by NUMA node.
		groups := map[int32][]novacronv1.GPU{}
		free, all := 0, 0
		for _, d := range hv.Status.GPUs {
			if !g.matches(d) || (numa != -2 && d.NUMANode != numa) {
				continue
			}
			all++
			if taken.Has(d.PCIAddress) {
				continue
			}
			groups[d.NUMANode] = append(groups[d.NUMANode], d)
			free++
		}
		if all == 0 && numa == -2 {
			return a, "no " + g.String()
		}
		if free < g.Count {
			return a, fmt.Sprintf("%d/%d %s free, %d needed", free, all, g, g.Count)
		}
		// Best fit: the smallest group that holds the whole request, else
		// the largest groups first.
		keys := make([]int32, 0, len(groups))
		for k := range groups {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			li, lj := len(groups[keys[i]]), len(groups[keys[j]])
			fi, fj := li >= g.Count, lj >= g.Count
			if fi != fj {
				return fi
			}
			if fi {
				return li < lj || (li == lj && keys[i] < keys[j])
			}
			return li > lj || (li == lj && keys[i] < keys[j])
		})
		need := g.Count
		for _, k := range keys {
			devs := groups[k]
			sort.Slice(devs, func(i, j int) bool { return devs[i].PCIAddress < devs[j].PCIAddress })
			for _, d := range devs {
				if need == 0 {
					break
				}
				a.GPUs = append(a.GPUs, novacronv1.AssignedDevice{Type: novacronv1.DeviceTypeGPU, Vendor: d.Vendor, Model: d.Model, PCIAddress: d.PCIAddress})
				taken.Insert(d.PCIAddress)
				need--
			}
		}
	}
	for _, vf := range req.VFs {
		var free []string
		for _, p := range hv.Status.SRIOV {
			if p.ResourceName != vf.ResourceName {
				continue
			}
			for _, f := range p.VirtualFunctions {
				if !taken.Has(f.PCIAddress) && (numa == -2 || f.NUMANode == numa) {
					free = append(free, f.PCIAddress)
				}
			}
		}
		if len(free) == 0 {
			return a, fmt.Sprintf("0 VFs free in %s for network %s", vf.ResourceName, vf.Network)
		}
		sort.Strings(free)
		if a.VFs == nil {
			a.VFs = map[string]string{}
		}
		a.VFs[vf.Network] = free[0]
		taken.Insert(free[0])
	}
	return a, ""
}

// FreeMatching counts the free devices a request could use on a node (the
// scheduler's fragmentation score).
func FreeMatching(req *Request, hv *novacronv1.Hypervisor, used sets.Set[string]) (free int) {
	for _, d := range hv.Status.GPUs {
		for _, g := range req.GPUs {
			if g.matches(d) && !used.Has(d.PCIAddress) {
				free++
				break
			}
		}
	}
	for _, p := range hv.Status.SRIOV {
		wanted := false
		for _, vf := range req.VFs {
			wanted = wanted || vf.ResourceName == p.ResourceName
		}
		if !wanted {
			continue
		}
		for _, f := range p.VirtualFunctions {
			if !used.Has(f.PCIAddress) {
				free++
			}
		}
	}
	return free
}
