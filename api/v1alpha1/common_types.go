package v1alpha1

// TemplateMeta is the part of object metadata a template may set. It is a small
// struct of its own, rather than metav1.ObjectMeta, so the CRD schema keeps it.
type TemplateMeta struct {
	// Labels copied onto the objects made from the template. For a VM they land on
	// its launcher pod, so pod (anti-)affinity between VMs can select them.
	// +optional
	Labels map[string]string `json:"labels,omitempty"`

	// Annotations copied onto the objects made from the template.
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}
