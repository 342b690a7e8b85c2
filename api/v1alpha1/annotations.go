package v1alpha1

import (
	"strings"

	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Labels and annotations NovaCron puts on the objects it manages.
const (
	// LabelVM names the VirtualMachine a launcher pod or hook Job belongs to.
	LabelVM = "novacron.io/vm"
	// LabelComponent says what part of a VM an object is (ComponentLauncher,
	// ComponentHook). The operator caches only pods and Jobs carrying it.
	LabelComponent = "novacron.io/component"
	// ComponentLauncher marks a VM's launcher pod (the VM's own, or a
	// migration's target pod); novacron-scheduler places only these.
	ComponentLauncher = "launcher"
	// ComponentHook marks the Job of a VM's lifecycle hook.
	ComponentHook = "hook"
	// LabelHook on a hook Job names the hook it runs (preStart, preStop).
	LabelHook = "novacron.io/hook"

	// LabelMigration names the VirtualMachineMigration a target launcher pod
	// belongs to.
	LabelMigration = "novacron.io/migration"
	// LabelDrain marks the VirtualMachineMigrations a drain made with the
	// node they leave.
	LabelDrain = "novacron.io/drain"

	// AnnotationPodSpecHash on a launcher pod is a hash of what the pod was made
	// from in the VM's spec (size, devices, networks, placement): a domain is
	// defined only from the spec its pod reserved.
	AnnotationPodSpecHash = "novacron.io/pod-spec-hash"

	// LabelMigrationSource marks a migration's target launcher pod with the
	// node the VM leaves: the scheduler never picks that node, and only picks
	// nodes whose CPU model matches it.
	LabelMigrationSource = "novacron.io/migration-source"

	// LabelSnapshotScheduled marks the VirtualMachineSnapshots a VM's
	// snapshotPolicy made ("true"); only those count against its retention.
	LabelSnapshotScheduled = "novacron.io/scheduled"
	// AnnotationScheduledAt is the schedule slot (RFC 3339) a scheduled
	// snapshot was taken for.
	AnnotationScheduledAt = "novacron.io/scheduled-at"
	// AnnotationRestoring is set on a VM, to the name of a
	// VirtualMachineRestore, while that restore works on its domain; the VM
	// controller leaves the domain alone meanwhile.
	AnnotationRestoring = "novacron.io/restoring"

	// AnnotationEvacuationPlan on a Hypervisor asks for a dry run of its
	// drain; any new value asks again. The answer is in status.evacuationPlan.
	AnnotationEvacuationPlan = "novacron.io/evacuation-plan"
	// TaintMaintenance on a Node drains it like a cordon does.
	TaintMaintenance = "node.novacron.io/maintenance"
)

// IsReserved says whether a label or annotation key is NovaCron's: its prefix
// is novacron.io or a subdomain of it (node.novacron.io). Nothing a tenant
// writes may carry one onto the objects NovaCron makes, where NovaCron's
// components trust them.
func IsReserved(key string) bool {
	prefix, _, ok := strings.Cut(key, "/")
	return ok && (prefix == "novacron.io" || strings.HasSuffix(prefix, ".novacron.io"))
}

// NetworkAttachmentDefinition is Multus' kind that an sr-iov network names; its
// annotation AnnotationResourceName names the VF pool (a device plugin resource).
var NetworkAttachmentDefinition = schema.GroupVersionKind{Group: "k8s.cni.cncf.io", Version: "v1", Kind: "NetworkAttachmentDefinition"}

// AnnotationHypervisorNetwork is the NetworkAttachmentDefinition annotation
// that names the hypervisor (libvirt) network a bridge network of that name
// attaches VMs in its namespace to.
const AnnotationHypervisorNetwork = "novacron.io/hypervisor-network"

// AnnotationResourceName is the NetworkAttachmentDefinition annotation that
// names its device plugin resource.
const AnnotationResourceName = "k8s.v1.cni.cncf.io/resourceName"

// DeviceAssignment is the set of host devices chosen for a VM on its node.
type DeviceAssignment struct {
	// GPUs passed through to the VM.
	GPUs []AssignedDevice `json:"gpus,omitempty"`
	// VFs maps each sr-iov network's name to the PCI address of its VF.
	VFs map[string]string `json:"vfs,omitempty"`
}
