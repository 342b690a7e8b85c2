package v1alpha1

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The operator keeps in a VM's status what it made for the VM and what it
// checked, because tenants cannot write status: a pod's labels, owner
// reference and annotations say nothing to trust, since anyone with pod
// rights in the namespace may write them.

// LaunchedBy says whether pod is one the operator made for the VM: its
// recorded launcher pod, or its migration's target pod.
func (vm *VirtualMachine) LaunchedBy(pod *corev1.Pod) bool {
	if pod.UID == "" || !metav1.IsControlledBy(pod, vm) {
		return false
	}
	if m := vm.Status.MigrationState; m != nil && m.TargetPodUID == pod.UID {
		return true
	}
	return pod.UID == vm.Status.LauncherPodUID || vm.AdoptsLauncherPod(pod)
}

// AdoptsLauncherPod says whether pod is the launcher pod an operator from
// before pod UIDs were recorded made: bound, and the pod the VM names. It is
// adopted once (its UID recorded), so an upgrade disturbs no running VM.
func (vm *VirtualMachine) AdoptsLauncherPod(pod *corev1.Pod) bool {
	return vm.Status.LauncherPodUID == "" && pod.Name == vm.Status.LauncherPod && pod.Spec.NodeName != "" && metav1.IsControlledBy(pod, vm)
}

// AssignedDevices are the devices the operator checked and recorded for the
// VM on its node; empty when it has none, or none yet.
func (s *VirtualMachineStatus) AssignedDevices() DeviceAssignment {
	a := DeviceAssignment{GPUs: s.Devices}
	for _, i := range s.Interfaces {
		if i.PCIAddress != "" {
			if a.VFs == nil {
				a.VFs = map[string]string{}
			}
			a.VFs[i.Name] = i.PCIAddress
		}
	}
	return a
}

// Empty says whether the assignment holds no device.
func (a DeviceAssignment) Empty() bool { return len(a.GPUs) == 0 && len(a.VFs) == 0 }

// PCIAddresses are the host devices the assignment holds, GPUs then VFs.
func (a DeviceAssignment) PCIAddresses() []string {
	out := make([]string, 0, len(a.GPUs)+len(a.VFs))
	for _, g := range a.GPUs {
		out = append(out, g.PCIAddress)
	}
	for _, vf := range a.VFs {
		out = append(out, vf)
	}
	return out
}

// DerivedName is the name of an object NovaCron makes for another: base and
// suffix, within max characters (63 where the name is also a label value,
// as a Job's is). A base too long keeps its start and gains a hash of the
// whole, so two long names never meet.
func DerivedName(base, suffix string, max int) string {
	if len(base)+len(suffix) <= max {
		return base + suffix
	}
	sum := sha256.Sum256([]byte(base))
	return strings.TrimRight(base[:max-len(suffix)-9], "-.") + "-" + hex.EncodeToString(sum[:4]) + suffix
}
