package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// VirtualMachineSnapshotSpec asks for one snapshot of one VM.
type VirtualMachineSnapshotSpec struct {
	// VMName is the VirtualMachine to snapshot, in the snapshot's namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="vmName is immutable"
	VMName string `json:"vmName"`

	// DiskOnly takes the disks' state without the guest's memory. A running VM's
	// snapshot includes its memory unless this is set.
	// +optional
	DiskOnly bool `json:"diskOnly,omitempty"`

	// Quiesce asks the guest agent to freeze file systems during the snapshot.
	// Without an agent the snapshot is crash-consistent.
	// +optional
	Quiesce bool `json:"quiesce,omitempty"`
}

// SnapshotPhase is where a snapshot is.
// +kubebuilder:validation:Enum=Pending;InProgress;Ready;Failed;Deleting
type SnapshotPhase string

// The phases of a snapshot.
const (
	SnapshotPending    SnapshotPhase = "Pending"
	SnapshotInProgress SnapshotPhase = "InProgress"
	SnapshotReady      SnapshotPhase = "Ready"
	SnapshotFailed     SnapshotPhase = "Failed"
	SnapshotDeleting   SnapshotPhase = "Deleting"
)

// SnapshotConsistency says how consistent a snapshot's disks are.
// +kubebuilder:validation:Enum=CrashConsistent;GuestQuiesced
type SnapshotConsistency string

// The consistency levels of a snapshot.
const (
	SnapshotCrashConsistent SnapshotConsistency = "CrashConsistent"
	SnapshotGuestQuiesced   SnapshotConsistency = "GuestQuiesced"
)

// VirtualMachineSnapshotStatus is what NovaCron observes of a snapshot.
type VirtualMachineSnapshotStatus struct {
	// Phase of the snapshot.
	// +optional
	Phase SnapshotPhase `json:"phase,omitempty"`
	// ReadyToUse is true once the snapshot can be restored.
	// +optional
	ReadyToUse bool `json:"readyToUse,omitempty"`
	// CreationTime is when the hypervisor took the snapshot.
	// +optional
	CreationTime *metav1.Time `json:"creationTime,omitempty"`
	// SizeBytes the snapshot takes on the hypervisor, when known.
	// +optional
	SizeBytes int64 `json:"sizeBytes,omitempty"`
	// IncludesMemory is true when the guest's memory state was saved too.
	// +optional
	IncludesMemory bool `json:"includesMemory,omitempty"`
	// Consistency is CrashConsistent or GuestQuiesced.
	// +optional
	Consistency SnapshotConsistency `json:"consistency,omitempty"`
	// NodeName of the hypervisor that holds the snapshot.
	// +optional
	NodeName string `json:"nodeName,omitempty"`
	// SnapshotName is the snapshot's name on the hypervisor.
	// +optional
	SnapshotName string `json:"snapshotName,omitempty"`
	// FailedAttempts counts tries that failed for a reason that may pass (an
	// unreachable hypervisor); they are retried with backoff until the limit.
	// +optional
	FailedAttempts int32 `json:"failedAttempts,omitempty"`
	// Conditions of the snapshot.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// ObservedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// VirtualMachineSnapshot is one snapshot of one VM.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=vmsnap;vmsnapshot,categories=novacron
// +kubebuilder:printcolumn:name="VM",type=string,JSONPath=`.spec.vmName`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Ready",type=boolean,JSONPath=`.status.readyToUse`
// +kubebuilder:printcolumn:name="Consistency",type=string,JSONPath=`.status.consistency`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type VirtualMachineSnapshot struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the requested snapshot.
	Spec VirtualMachineSnapshotSpec `json:"spec"`
	// Status is the observed snapshot.
	// +optional
	Status VirtualMachineSnapshotStatus `json:"status,omitempty"`
}

// VirtualMachineSnapshotList is a list of VirtualMachineSnapshots.
//
// +kubebuilder:object:root=true
type VirtualMachineSnapshotList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualMachineSnapshot `json:"items"`
}

// VirtualMachineRestoreSpec asks to restore a VM to one of its snapshots.
type VirtualMachineRestoreSpec struct {
	// VMName is the VirtualMachine to restore, in the restore's namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="vmName is immutable"
	VMName string `json:"vmName"`

	// SnapshotName is the VirtualMachineSnapshot to restore.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="snapshotName is immutable"
	SnapshotName string `json:"snapshotName"`

	// StopVM lets the restore stop a running VM first (and start it again after).
	// Without it, restoring a running VM is refused.
	// +optional
	StopVM bool `json:"stopVM,omitempty"`
}

// RestorePhase is where a restore is.
// +kubebuilder:validation:Enum=Pending;InProgress;Succeeded;Failed
type RestorePhase string

// The phases of a restore.
const (
	RestorePending    RestorePhase = "Pending"
	RestoreInProgress RestorePhase = "InProgress"
	RestoreSucceeded  RestorePhase = "Succeeded"
	RestoreFailed     RestorePhase = "Failed"
)

// VirtualMachineRestoreStatus is what NovaCron observes of a restore.
type VirtualMachineRestoreStatus struct {
	// Phase of the restore.
	// +optional
	Phase RestorePhase `json:"phase,omitempty"`
	// StartTime of the restore.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// CompletionTime of the restore, successful or not.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
	// Conditions of the restore.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// ObservedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// VirtualMachineRestore restores one VM to one of its snapshots.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=vmrestore,categories=novacron
// +kubebuilder:printcolumn:name="VM",type=string,JSONPath=`.spec.vmName`
// +kubebuilder:printcolumn:name="Snapshot",type=string,JSONPath=`.spec.snapshotName`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type VirtualMachineRestore struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the requested restore.
	Spec VirtualMachineRestoreSpec `json:"spec"`
	// Status is the observed restore.
	// +optional
	Status VirtualMachineRestoreStatus `json:"status,omitempty"`
}

// VirtualMachineRestoreList is a list of VirtualMachineRestores.
//
// +kubebuilder:object:root=true
type VirtualMachineRestoreList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualMachineRestore `json:"items"`
}

func init() {
	SchemeBuilder.Register(&VirtualMachineSnapshot{}, &VirtualMachineSnapshotList{},
		&VirtualMachineRestore{}, &VirtualMachineRestoreList{})
}

// Why is what the snapshot's Ready condition says: why it failed, or what it
// waits for. A status written without one (by hand, or by an older
// operator) says so instead.
func (s *VirtualMachineSnapshotStatus) Why() string {
	if c := meta.FindStatusCondition(s.Conditions, ConditionReady); c != nil {
		return c.Message
	}
	return "no reason recorded"
}
