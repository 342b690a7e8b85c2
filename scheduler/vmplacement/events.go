package vmplacement

import (
	"context"

	"sort"

	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

// Custom resources as the scheduling queue names them: resource.version.group.
var (
	hypervisorResource = fwk.EventResource("hypervisors.v1alpha1.novacron.io")
	policyResource     = fwk.EventResource("virtualmachinepolicies.v1alpha1.novacron.io")
)

// EventsToRegister says which cluster changes can make a rejected VM fit:
// Hypervisor inventory and policy changes, VMs leaving nodes, and devices
// DRA gives back. The hints keep everything else from waking VM pods up.
func (p *Plugin) EventsToRegister(context.Context) ([]fwk.ClusterEventWithHint, error) {
	return []fwk.ClusterEventWithHint{
		{Event: fwk.ClusterEvent{Resource: hypervisorResource, ActionType: fwk.Add | fwk.Update}, QueueingHintFn: launcherOnly},
		{Event: fwk.ClusterEvent{Resource: policyResource, ActionType: fwk.Add | fwk.Update | fwk.Delete}, QueueingHintFn: launcherOnly},
		{Event: fwk.ClusterEvent{Resource: fwk.AssignedPod, ActionType: fwk.Delete}, QueueingHintFn: launcherLeft},
		{Event: fwk.ClusterEvent{Resource: fwk.Node, ActionType: fwk.Add}, QueueingHintFn: launcherOnly},
		// A launcher pod goes before its claim is deallocated (by
		// kube-controller-manager, a moment later): the freed devices are
		// counted only from then on.
		{Event: fwk.ClusterEvent{Resource: fwk.ResourceClaim, ActionType: fwk.Update | fwk.Delete}, QueueingHintFn: devicesFreed},
	}, nil
}

// devicesFreed requeues a VM pod when a claim gives its devices back.
func devicesFreed(_ klog.Logger, pod *corev1.Pod, oldObj, newObj any) (fwk.QueueingHint, error) {
	old, _ := oldObj.(*resourceapi.ResourceClaim)
	claim, _ := newObj.(*resourceapi.ResourceClaim)
	if isLauncher(pod) && old != nil && old.Status.Allocation != nil && (claim == nil || claim.Status.Allocation == nil) {
		return fwk.Queue, nil
	}
	return fwk.QueueSkip, nil
}

func launcherOnly(_ klog.Logger, pod *corev1.Pod, _, _ any) (fwk.QueueingHint, error) {
	if isLauncher(pod) {
		return fwk.Queue, nil
	}
	return fwk.QueueSkip, nil
}

// launcherLeft requeues a VM pod only when another VM's pod left a node: only
// that frees vCPUs, memory or devices this plugin counts.
func launcherLeft(_ klog.Logger, pod *corev1.Pod, oldObj, _ any) (fwk.QueueingHint, error) {
	gone, ok := oldObj.(*corev1.Pod)
	if ok && isLauncher(pod) && isLauncher(gone) {
		return fwk.Queue, nil
	}
	return fwk.QueueSkip, nil
}

// SignPod lets the scheduler batch pods (reuse one pod's filtering and scoring
// for the identical pods after it). Pods that are not VM launchers get an
// empty signature: the plugin has no say on them. A launcher pod is signed by
// what the plugin decides on, its VM's size and devices and the node it
// migrates from; DRA allocates each pod's claim itself, so a reused result
// can never hand out a device twice. While placement policies are in force launcher pods
// are not signed: a policy may look at any field of the VM.
func (p *Plugin) SignPod(_ context.Context, pod *corev1.Pod) ([]fwk.SignFragment, *fwk.Status) {
	if !isLauncher(pod) {
		return nil, nil
	}
	if p.engine.Serves(novacronv1.DecisionPlacement) {
		return nil, fwk.NewStatus(fwk.Unschedulable, "placement policies may read any field of the VM")
	}
	vm, err := p.vm(pod)
	if err != nil {
		return nil, fwk.NewStatus(fwk.Unschedulable, "VirtualMachine not found")
	}
	spec := &vm.Spec.Template.Spec
	var nets []string
	for _, n := range spec.Networks {
		if n.Type == novacronv1.NetworkTypeSRIOV {
			nets = append(nets, pod.Namespace+"/"+n.Name)
		}
	}
	sort.Strings(nets)
	return []fwk.SignFragment{{Key: "novacron.io/VirtualMachine.Spec.Template.Spec.PlacementRequest()", Value: map[string]any{
		"cpu": spec.Resources.CPU, "memory": spec.Resources.Memory.String(), "devices": spec.Devices, "sriov": nets,
		"migrationSource": pod.Labels[novacronv1.LabelMigrationSource],
	}}}, nil
}
