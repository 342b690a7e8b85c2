package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DecisionPoint is a place where NovaCron asks policies for a decision.
// +kubebuilder:validation:Enum=admission;placement;migration
type DecisionPoint string

// The decision points.
const (
	DecisionAdmission DecisionPoint = "admission"
	DecisionPlacement DecisionPoint = "placement"
	DecisionMigration DecisionPoint = "migration"
)

// Enforcement is what a policy's violations do.
// +kubebuilder:validation:Enum=deny;warn;dryrun
type Enforcement string

// The enforcement modes.
const (
	// EnforcementDeny rejects the request or decision.
	EnforcementDeny Enforcement = "deny"
	// EnforcementWarn lets it through with a warning kubectl shows.
	EnforcementWarn Enforcement = "warn"
	// EnforcementDryRun only records an event and a metric.
	EnforcementDryRun Enforcement = "dryrun"
)

// VirtualMachinePolicySpec is a Rego policy and where it applies.
type VirtualMachinePolicySpec struct {
	// Description says what the policy is for, for people.
	// +kubebuilder:validation:MaxLength=1024
	// +optional
	Description string `json:"description,omitempty"`

	// Rego is the policy's source. Its package and the rules each decision point
	// reads are described in policies/README.md.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=262144
	Rego string `json:"rego"`

	// DecisionPoints the policy serves: admission, placement, migration.
	// +kubebuilder:validation:MinItems=1
	// +listType=set
	DecisionPoints []DecisionPoint `json:"decisionPoints"`

	// Enforcement is deny, warn or dryrun.
	// +kubebuilder:default=deny
	// +optional
	Enforcement Enforcement `json:"enforcement,omitempty"`

	// NamespaceSelector limits the policy to VMs in matching namespaces; empty
	// means all namespaces.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
}

// VirtualMachinePolicyStatus is what NovaCron observes of a policy.
type VirtualMachinePolicyStatus struct {
	// Conditions: Compiled.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// ObservedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// VirtualMachinePolicy is a Rego policy written by the platform team that
// governs VM admission, placement or migration.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=vmpol;vmpolicy,categories=novacron
// +kubebuilder:printcolumn:name="Enforcement",type=string,JSONPath=`.spec.enforcement`
// +kubebuilder:printcolumn:name="Points",type=string,JSONPath=`.spec.decisionPoints`
// +kubebuilder:printcolumn:name="Compiled",type=string,JSONPath=`.status.conditions[?(@.type=="Compiled")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type VirtualMachinePolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the policy.
	Spec VirtualMachinePolicySpec `json:"spec"`
	// Status is the observed policy.
	// +optional
	Status VirtualMachinePolicyStatus `json:"status,omitempty"`
}

// VirtualMachinePolicyList is a list of VirtualMachinePolicies.
//
// +kubebuilder:object:root=true
type VirtualMachinePolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualMachinePolicy `json:"items"`
}

func init() {
	SchemeBuilder.Register(&VirtualMachinePolicy{}, &VirtualMachinePolicyList{})
}
