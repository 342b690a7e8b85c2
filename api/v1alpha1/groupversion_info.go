// Package v1alpha1 holds the novacron.io/v1alpha1 API: virtual machines, their
// migrations, snapshots and restores, the hypervisors that run them and the
// policies that govern them.
//
// +kubebuilder:object:generate=true
// +groupName=novacron.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every NovaCron object.
	GroupVersion = schema.GroupVersion{Group: "novacron.io", Version: "v1alpha1"}

	// SchemeBuilder registers the NovaCron types with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the NovaCron types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
