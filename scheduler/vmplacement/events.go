package vmplacement

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
)

func metav1PatchOptions() metav1.PatchOptions { return metav1.PatchOptions{} }

// Custom resources as the scheduling queue names them: resource.version.group.
var (
	hypervisorResource = fwk.EventResource("hypervisors.v1alpha1.novacron.io")
	policyResource     = fwk.EventResource("virtualmachinepolicies.v1alpha1.novacron.io")
)

// EventsToRegister says which cluster changes can make a rejected VM fit:
// Hypervisor inventory and policy changes, and VMs leaving nodes. The hints
// keep everything else from waking VM pods up.
func (p *Plugin) EventsToRegister(context.Context) ([]fwk.ClusterEventWithHint, error) {
	return []fwk.ClusterEventWithHint{
		{Event: fwk.ClusterEvent{Resource: hypervisorResource, ActionType: fwk.Add | fwk.Update}, QueueingHintFn: launcherOnly},
		{Event: fwk.ClusterEvent{Resource: policyResource, ActionType: fwk.Add | fwk.Update | fwk.Delete}, QueueingHintFn: launcherOnly},
		{Event: fwk.ClusterEvent{Resource: fwk.AssignedPod, ActionType: fwk.Delete}, QueueingHintFn: launcherLeft},
		{Event: fwk.ClusterEvent{Resource: fwk.Node, ActionType: fwk.Add}, QueueingHintFn: launcherOnly},
	}, nil
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

// SignPod lets the scheduler batch pods this plugin has no say on (every pod
// that is not a VM launcher: an empty signature from us). VM launcher pods are
// not signed: their fit depends on device assignments made in Reserve, which a
// cached result from an earlier identical pod would not see, so batching them
// could hand out a device twice.
func (p *Plugin) SignPod(_ context.Context, pod *corev1.Pod) ([]fwk.SignFragment, *fwk.Status) {
	if isLauncher(pod) {
		return nil, fwk.NewStatus(fwk.Unschedulable, "VM launcher pods are placed one by one: their devices are assigned in Reserve")
	}
	return nil, nil
}
