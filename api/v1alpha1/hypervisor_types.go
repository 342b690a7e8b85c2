package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// HypervisorProvider is the kind of hypervisor API a node offers.
// +kubebuilder:validation:Enum=libvirt
type HypervisorProvider string

// ProviderLibvirt drives the node through libvirt.
const ProviderLibvirt HypervisorProvider = "libvirt"

// HypervisorSpec is how NovaCron reaches and sizes a node's hypervisor.
type HypervisorSpec struct {
	// URI of the hypervisor's API, such as qemu+tls://node-1/system, or
	// test:///default for a simulated node.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	URI string `json:"uri"`

	// Provider is the hypervisor API. Only libvirt for now.
	// +kubebuilder:default=libvirt
	// +optional
	Provider HypervisorProvider `json:"provider,omitempty"`

	// Overcommit ratios: how much more vCPU and guest memory the node may hand
	// out than it has. A VM's launcher pod requests its size divided by these.
	// +optional
	Overcommit Overcommit `json:"overcommit,omitempty"`

	// DomainType forces how guests run: kvm (hardware virtualization) or qemu
	// (software emulation, TCG). Empty picks kvm when the host offers it. Set
	// qemu where /dev/kvm exists but does not work (some nested setups).
	// +kubebuilder:validation:Enum=kvm;qemu
	// +optional
	DomainType string `json:"domainType,omitempty"`

	// StoragePool is the hypervisor storage pool VM disks are created in.
	// +kubebuilder:default=default
	// +optional
	StoragePool string `json:"storagePool,omitempty"`

	// MigrationURI is how other nodes' libvirtd reach this one for
	// peer-to-peer live migration, such as qemu+tls://node-2/system. Defaults
	// to URI; set it when NovaCron reaches the node another way (a local
	// socket).
	// +kubebuilder:validation:MaxLength=512
	// +optional
	MigrationURI string `json:"migrationURI,omitempty"`
}

// Overcommit holds the overcommit ratios of a hypervisor.
type Overcommit struct {
	// CPU is the vCPU to physical CPU ratio, such as 4 or 1.5. Defaults to 1.
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).isGreaterThan(quantity('0'))",message="must be a ratio greater than 0, such as 4 or 1.5"
	// +optional
	CPU *resource.Quantity `json:"cpu,omitempty"`

	// Memory is the guest memory to physical memory ratio. Defaults to 1.
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).isGreaterThan(quantity('0'))",message="must be a ratio greater than 0, such as 1 or 1.5"
	// +optional
	Memory *resource.Quantity `json:"memory,omitempty"`
}

// GPU is one GPU on a hypervisor node.
type GPU struct {
	// Vendor, such as nvidia.
	Vendor string `json:"vendor"`
	// Model, such as tesla-t4.
	Model string `json:"model"`
	// PCIAddress on the host, such as 0000:3b:00.0.
	PCIAddress string `json:"pciAddress"`
	// NUMANode the device is attached to; -1 when unknown.
	// +optional
	NUMANode int32 `json:"numaNode,omitempty"`
	// UUID reported by the driver.
	// +optional
	UUID string `json:"uuid,omitempty"`
	// MemoryBytes of device memory.
	// +optional
	MemoryBytes int64 `json:"memoryBytes,omitempty"`
}

// VirtualFunction is one SR-IOV virtual function.
type VirtualFunction struct {
	// PCIAddress of the VF, such as 0000:5e:02.1.
	PCIAddress string `json:"pciAddress"`
	// NUMANode the VF's physical function is attached to; -1 when unknown.
	// +optional
	NUMANode int32 `json:"numaNode,omitempty"`
}

// SRIOVPool is the set of VFs a node offers for one network resource.
type SRIOVPool struct {
	// ResourceName the pool serves, as named by NetworkAttachmentDefinitions'
	// k8s.v1.cni.cncf.io/resourceName annotation, such as intel.com/sriov_data.
	ResourceName string `json:"resourceName"`
	// PhysicalFunction is the PF's interface name, such as ens1f0.
	// +optional
	PhysicalFunction string `json:"physicalFunction,omitempty"`
	// VirtualFunctions in the pool.
	// +optional
	VirtualFunctions []VirtualFunction `json:"virtualFunctions,omitempty"`
}

// Evacuation is the state of a node's drain.
type Evacuation struct {
	// Reason the node is being drained: Cordoned or Maintenance.
	Reason string `json:"reason"`
	// Migrating VMs (namespace/name) have a migration off the node.
	// +optional
	Migrating []string `json:"migrating,omitempty"`
	// Blocked VMs cannot leave the node, each with why.
	// +optional
	Blocked []EvacuationEntry `json:"blocked,omitempty"`
}

// EvacuationPlan is a dry run of a drain.
type EvacuationPlan struct {
	// Request is the annotation value this plan answers.
	Request string `json:"request"`
	// PlannedAt is when the plan was made.
	PlannedAt metav1.Time `json:"plannedAt"`
	// VMs on the node, each with a target or a blocker.
	// +optional
	VMs []EvacuationEntry `json:"vms,omitempty"`
}

// EvacuationEntry is one VM of an evacuation.
type EvacuationEntry struct {
	// VM is namespace/name.
	VM string `json:"vm"`
	// Target is the node it would move to (a dry run's estimate; the
	// scheduler decides when it moves).
	// +optional
	Target string `json:"target,omitempty"`
	// Blocker says why it cannot move live.
	// +optional
	Blocker string `json:"blocker,omitempty"`
}

// HypervisorStatus is what NovaCron observes of a node's hypervisor.
type HypervisorStatus struct {
	// Capacity is the physical CPU and memory of the node.
	// +optional
	Capacity corev1.ResourceList `json:"capacity,omitempty"`
	// Allocatable is what VMs may take, overcommit included.
	// +optional
	Allocatable corev1.ResourceList `json:"allocatable,omitempty"`
	// CPUModel is the host CPU model; live migration needs a compatible one.
	// +optional
	CPUModel string `json:"cpuModel,omitempty"`
	// CPUVendor is the host CPU vendor.
	// +optional
	CPUVendor string `json:"cpuVendor,omitempty"`
	// NUMANodes is the number of NUMA nodes on the host.
	// +optional
	NUMANodes int32 `json:"numaNodes,omitempty"`
	// HypervisorVersion as reported by the hypervisor.
	// +optional
	HypervisorVersion string `json:"hypervisorVersion,omitempty"`
	// GPUs on the node.
	// +optional
	GPUs []GPU `json:"gpus,omitempty"`
	// SRIOV lists the VF pools on the node.
	// +optional
	SRIOV []SRIOVPool `json:"sriov,omitempty"`
	// Evacuation reports a drain of the node: the VMs still on it and what
	// keeps each there.
	// +optional
	Evacuation *Evacuation `json:"evacuation,omitempty"`
	// EvacuationPlan answers the annotation novacron.io/evacuation-plan: for
	// every VM on the node, where it would go or what blocks it.
	// +optional
	EvacuationPlan *EvacuationPlan `json:"evacuationPlan,omitempty"`
	// LastHeartbeatTime is when the hypervisor last answered.
	// +optional
	LastHeartbeatTime *metav1.Time `json:"lastHeartbeatTime,omitempty"`
	// Conditions: Ready, Reachable.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// ObservedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// Hypervisor is a node's hypervisor: how to reach it and what it has. It is
// named after its Node.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=hv,categories=novacron
// +kubebuilder:printcolumn:name="URI",type=string,JSONPath=`.spec.uri`
// +kubebuilder:printcolumn:name="Reachable",type=string,JSONPath=`.status.conditions[?(@.type=="Reachable")].status`
// +kubebuilder:printcolumn:name="CPU-Model",type=string,JSONPath=`.status.cpuModel`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Hypervisor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec says how to reach and size the hypervisor.
	Spec HypervisorSpec `json:"spec"`
	// Status is the observed hypervisor.
	// +optional
	Status HypervisorStatus `json:"status,omitempty"`
}

// HypervisorList is a list of Hypervisors.
//
// +kubebuilder:object:root=true
type HypervisorList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Hypervisor `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Hypervisor{}, &HypervisorList{})
}

// VMCapacity is what VMs may take on the node: its capacity times its
// overcommit ratios (1 where unset).
func (h *Hypervisor) VMCapacity() (vcpus, memBytes int64) {
	cpuRatio, memRatio := 1.0, 1.0
	if q := h.Spec.Overcommit.CPU; q != nil {
		cpuRatio = q.AsApproximateFloat64()
	}
	if q := h.Spec.Overcommit.Memory; q != nil {
		memRatio = q.AsApproximateFloat64()
	}
	return int64(float64(h.Status.Capacity.Cpu().Value()) * cpuRatio), int64(float64(h.Status.Capacity.Memory().Value()) * memRatio)
}
