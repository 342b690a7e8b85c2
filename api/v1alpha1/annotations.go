package v1alpha1

// Labels and annotations NovaCron puts on the objects it manages.
const (
	// LabelVM names the VirtualMachine a launcher pod or hook Job belongs to.
	LabelVM = "novacron.io/vm"
	// LabelComponent says what part of a VM an object is (launcher, hook).
	LabelComponent = "novacron.io/component"

	// AnnotationAssignedDevices is set on a launcher pod by novacron-scheduler
	// (in PreBind) to the JSON form of DeviceAssignment: the concrete devices the
	// VM gets on the pod's node.
	AnnotationAssignedDevices = "novacron.io/assigned-devices"
)

// DeviceAssignment is the set of host devices chosen for a VM on its node.
type DeviceAssignment struct {
	// GPUs passed through to the VM.
	GPUs []AssignedDevice `json:"gpus,omitempty"`
	// VFs maps each sr-iov network's name to the PCI address of its VF.
	VFs map[string]string `json:"vfs,omitempty"`
}
