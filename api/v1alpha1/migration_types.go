package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// MigrationReason says who asked for a migration.
// +kubebuilder:validation:Enum=Manual;Drain;Rebalance
type MigrationReason string

// The reasons for a migration.
const (
	MigrationManual    MigrationReason = "Manual"
	MigrationDrain     MigrationReason = "Drain"
	MigrationRebalance MigrationReason = "Rebalance"
)

// VirtualMachineMigrationSpec asks for one live migration of one VM.
type VirtualMachineMigrationSpec struct {
	// VMName is the VirtualMachine to move, in the migration's namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="vmName is immutable"
	VMName string `json:"vmName"`

	// TargetNodeName narrows the target to one node. The scheduler still checks
	// that the VM fits there; it is never the source node.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="targetNodeName is immutable"
	TargetNodeName string `json:"targetNodeName,omitempty"`

	// NodeSelector narrows the target nodes further; it adds to the VM's own
	// placement rules and never widens them.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// Reason says who asked for the migration: Manual, Drain or Rebalance.
	// +kubebuilder:default=Manual
	// +optional
	Reason MigrationReason `json:"reason,omitempty"`

	// Cancel aborts the migration; the VM stays on its source node.
	// +optional
	Cancel bool `json:"cancel,omitempty"`
}

// MigrationPhase is where a migration is.
// +kubebuilder:validation:Enum=Pending;Scheduling;TargetReady;Running;Succeeded;Failed;Cancelled
type MigrationPhase string

// The phases of a migration.
const (
	MigrationPending     MigrationPhase = "Pending"
	MigrationScheduling  MigrationPhase = "Scheduling"
	MigrationTargetReady MigrationPhase = "TargetReady"
	MigrationRunning     MigrationPhase = "Running"
	MigrationSucceeded   MigrationPhase = "Succeeded"
	MigrationFailed      MigrationPhase = "Failed"
	MigrationCancelled   MigrationPhase = "Cancelled"
)

// Done is true once the migration can no longer act: it succeeded, failed or
// was cancelled.
func (p MigrationPhase) Done() bool {
	return p == MigrationSucceeded || p == MigrationFailed || p == MigrationCancelled
}

// MigrationProgress is the hypervisor's view of a running migration.
type MigrationProgress struct {
	// DataTotalBytes is the memory (and storage) to transfer.
	// +optional
	DataTotalBytes int64 `json:"dataTotalBytes,omitempty"`
	// DataProcessedBytes is what has been transferred so far.
	// +optional
	DataProcessedBytes int64 `json:"dataProcessedBytes,omitempty"`
	// DataRemainingBytes is what is left to transfer.
	// +optional
	DataRemainingBytes int64 `json:"dataRemainingBytes,omitempty"`
	// DirtyRateBytesPerSecond is how fast the guest dirties memory.
	// +optional
	DirtyRateBytesPerSecond int64 `json:"dirtyRateBytesPerSecond,omitempty"`
	// Iterations is the number of memory copy passes.
	// +optional
	Iterations int64 `json:"iterations,omitempty"`
	// ElapsedMilliseconds since the hypervisor started the job.
	// +optional
	ElapsedMilliseconds int64 `json:"elapsedMilliseconds,omitempty"`
	// DowntimeMilliseconds the guest was paused at switch-over, known at the end.
	// +optional
	DowntimeMilliseconds int64 `json:"downtimeMilliseconds,omitempty"`
}

// VirtualMachineMigrationStatus is what NovaCron observes of a migration.
type VirtualMachineMigrationStatus struct {
	// Phase of the migration.
	// +optional
	Phase MigrationPhase `json:"phase,omitempty"`
	// SourceNode the VM runs on when the migration starts.
	// +optional
	SourceNode string `json:"sourceNode,omitempty"`
	// TargetNode the scheduler chose.
	// +optional
	TargetNode string `json:"targetNode,omitempty"`
	// TargetPod is the launcher pod on the target node.
	// +optional
	TargetPod string `json:"targetPod,omitempty"`
	// TargetPodUID is that pod's UID, recorded when the migration made it:
	// a pod of that name made by anyone else is not the migration's.
	// +optional
	TargetPodUID types.UID `json:"targetPodUID,omitempty"`
	// SchedulingStartTime is when the migration took its slot and asked for
	// a target node; one not placed within the operator's
	// --migration-scheduling-timeout fails and gives the slot back.
	// +optional
	SchedulingStartTime *metav1.Time `json:"schedulingStartTime,omitempty"`
	// StartTime of the migration.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// CompletionTime of the migration, successful or not.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
	// Progress from the hypervisor's job statistics.
	// +optional
	Progress *MigrationProgress `json:"progress,omitempty"`
	// Conditions of the migration.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// ObservedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// VirtualMachineMigration is one live migration of one VM between hypervisors.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=vmim;vmmigration,categories=novacron
// +kubebuilder:printcolumn:name="VM",type=string,JSONPath=`.spec.vmName`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.spec.reason`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Source",type=string,JSONPath=`.status.sourceNode`
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.status.targetNode`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type VirtualMachineMigration struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the requested migration.
	Spec VirtualMachineMigrationSpec `json:"spec"`
	// Status is the observed migration.
	// +optional
	Status VirtualMachineMigrationStatus `json:"status,omitempty"`
}

// VirtualMachineMigrationList is a list of VirtualMachineMigrations.
//
// +kubebuilder:object:root=true
type VirtualMachineMigrationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualMachineMigration `json:"items"`
}

func init() {
	SchemeBuilder.Register(&VirtualMachineMigration{}, &VirtualMachineMigrationList{})
}
