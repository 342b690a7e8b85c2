package devenv

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/devices/discovery"
)

// Profile is a node profile file (devenv/nodes.yaml documents it): the
// kinds of hypervisor node the dev environment registers.
type Profile struct {
	Nodes []NodeKind `json:"nodes"`
}

// NodeKind is one kind of node in a Profile.
type NodeKind struct {
	Name       string                `json:"name"`
	CPUs       int64                 `json:"cpus"`
	Memory     resource.Quantity     `json:"memory"`
	CPUModel   string                `json:"cpuModel,omitempty"`
	Overcommit novacronv1.Overcommit `json:"overcommit,omitempty"`
	Labels     map[string]string     `json:"labels,omitempty"`
	GPUs       []GPUKind             `json:"gpus,omitempty"`
	SRIOV      []VFPool              `json:"sriov,omitempty"`
}

// GPUKind is a number of identical GPUs.
type GPUKind struct {
	Vendor string `json:"vendor"`
	Model  string `json:"model"`
	Count  int    `json:"count"`
}

// VFPool is an SR-IOV physical function's virtual functions.
type VFPool struct {
	ResourceName     string `json:"resourceName"`
	PhysicalFunction string `json:"physicalFunction,omitempty"`
	VFs              int    `json:"vfs"`
}

// ParseProfile reads a node profile and checks it, naming the field at fault.
func ParseProfile(raw []byte) (*Profile, error) {
	var p Profile
	if err := yaml.UnmarshalStrict(raw, &p); err != nil {
		return nil, fmt.Errorf("node profile: %w", err)
	}
	if len(p.Nodes) == 0 {
		return nil, fmt.Errorf("node profile: nodes: at least one kind of node is needed")
	}
	seen := map[string]bool{}
	for i, k := range p.Nodes {
		f := fmt.Sprintf("nodes[%d]", i)
		// Room for the "-N" suffix within a DNS label.
		if errs := validation.IsDNS1123Label(k.Name + "-1"); len(errs) > 0 {
			return nil, fmt.Errorf("node profile: %s.name %q: %s", f, k.Name, errs[0])
		}
		if seen[k.Name] {
			return nil, fmt.Errorf("node profile: %s.name %q: used twice", f, k.Name)
		}
		seen[k.Name] = true
		if k.CPUs < 1 {
			return nil, fmt.Errorf("node profile: %s.cpus: must be at least 1", f)
		}
		if k.Memory.Cmp(resource.MustParse("1Gi")) < 0 {
			return nil, fmt.Errorf("node profile: %s.memory: must be at least 1Gi, got %s", f, k.Memory.String())
		}
		for _, q := range []struct {
			name string
			v    *resource.Quantity
		}{{"overcommit.cpu", k.Overcommit.CPU}, {"overcommit.memory", k.Overcommit.Memory}} {
			if q.v != nil && q.v.Sign() <= 0 {
				return nil, fmt.Errorf("node profile: %s.%s: must be above 0", f, q.name)
			}
		}
		for j, g := range k.GPUs {
			if g.Vendor == "" || g.Model == "" {
				return nil, fmt.Errorf("node profile: %s.gpus[%d]: vendor and model are required", f, j)
			}
			if _, ok := gpuVendorIDs[g.Vendor]; !ok {
				return nil, fmt.Errorf("node profile: %s.gpus[%d].vendor %q: must be nvidia, amd or intel", f, j, g.Vendor)
			}
			if discovery.Slug(g.Model) != g.Model {
				return nil, fmt.Errorf("node profile: %s.gpus[%d].model %q: lowercase letters, digits and dashes, such as tesla-t4", f, j, g.Model)
			}
			if g.Count < 1 || g.Count > 16 {
				return nil, fmt.Errorf("node profile: %s.gpus[%d].count: must be 1 to 16, got %d", f, j, g.Count)
			}
		}
		for j, s := range k.SRIOV {
			if s.ResourceName == "" {
				return nil, fmt.Errorf("node profile: %s.sriov[%d].resourceName: required", f, j)
			}
			if s.VFs < 1 || s.VFs > 64 {
				return nil, fmt.Errorf("node profile: %s.sriov[%d].vfs: must be 1 to 64, got %d", f, j, s.VFs)
			}
		}
	}
	return &p, nil
}

// SimNode is one node the dev environment registers.
type SimNode struct {
	Name string
	Kind NodeKind
}

// Expand makes n nodes by cycling through the profile's kinds (n <= 0: one of
// each).
func (p *Profile) Expand(n int) []SimNode {
	if n <= 0 {
		n = len(p.Nodes)
	}
	nodes := make([]SimNode, 0, n)
	for i := 0; i < n; i++ {
		k := p.Nodes[i%len(p.Nodes)]
		nodes = append(nodes, SimNode{Name: fmt.Sprintf("%s-%d", k.Name, i/len(p.Nodes)+1), Kind: k})
	}
	return nodes
}

// Allocatable is what the node's kubelet would publish: CPU, memory and
// pods. Its GPUs and VFs are DRA devices in its ResourceSlices, not
// extended resources.
func (n SimNode) Allocatable() corev1.ResourceList {
	alloc := corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewQuantity(n.Kind.CPUs, resource.DecimalSI),
		corev1.ResourceMemory: n.Kind.Memory.DeepCopy(),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	// The launcher pods request vCPUs divided by the overcommit ratio, so the
	// node's CPU is what the kubelet reports: physical CPUs.
	return alloc
}

// HypervisorStatus is what the node publishes: the capacity and CPU model
// of its profile, and its GPUs and VFs as novacron-node's discovery finds
// them in the node's simulated sysfs (Machine).
func (n SimNode) HypervisorStatus() (novacronv1.HypervisorStatus, error) {
	st, _, err := n.publication()
	return st, err
}

// publication is what the node's agent publishes: its Hypervisor status and
// its DRA ResourceSlices (none for a node without devices).
func (n SimNode) publication() (novacronv1.HypervisorStatus, []*resourceapi.ResourceSlice, error) {
	st := novacronv1.HypervisorStatus{
		Capacity: corev1.ResourceList{
			corev1.ResourceCPU:    *resource.NewQuantity(n.Kind.CPUs, resource.DecimalSI),
			corev1.ResourceMemory: n.Kind.Memory.DeepCopy(),
		},
		CPUModel:          n.Kind.CPUModel,
		CPUVendor:         "Intel",
		HypervisorVersion: "libvirt test driver",
	}
	inv, slices, err := n.discover()
	if err != nil {
		return st, nil, err
	}
	found := discovery.HypervisorStatus(inv)
	st.GPUs, st.SRIOV, st.NUMANodes = found.GPUs, found.SRIOV, found.NUMANodes
	return st, slices, nil
}
