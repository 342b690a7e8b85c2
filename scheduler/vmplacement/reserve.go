package vmplacement

import (
	"context"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	fwk "k8s.io/kube-scheduler/framework"
	schedutil "k8s.io/kubernetes/pkg/scheduler/util"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/devices"
)

const assignmentKey fwk.StateKey = Name + "/assignment"

type assignmentState struct{ a novacronv1.DeviceAssignment }

func (s *assignmentState) Clone() fwk.StateData { return s }

// Reserve picks the VM's concrete devices on the chosen node and holds them
// until the pod carries them, so two pods in flight never get the same device.
func (p *Plugin) Reserve(ctx context.Context, state fwk.CycleState, pod *corev1.Pod, node string) *fwk.Status {
	if !isLauncher(pod) {
		return nil
	}
	s, st := readState(state)
	if st != nil {
		return st
	}
	ni, err := p.handle.SnapshotSharedLister().NodeInfos().Get(node)
	if err != nil {
		return fwk.AsStatus(err)
	}
	e, err := p.hypervisorEntry(node)
	if err != nil {
		return fwk.AsStatus(err)
	}
	var a novacronv1.DeviceAssignment
	if s.req.HasDevices() {
		var reason string
		a, reason = devices.Assign(&s.req, e.hv, p.usage(e, ni, pod).devices, p.args.NUMAAlignment)
		if reason != "" {
			return fwk.NewStatus(fwk.Unschedulable, reason)
		}
	}
	if held := a.PCIAddresses(); len(held) > 0 {
		p.hold(node, pod.UID, held)
	}
	state.Write(assignmentKey, &assignmentState{a: a})
	return nil
}

// hold reserves devices on node for a pod (see usage for how long).
func (p *Plugin) hold(node string, uid types.UID, devices []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reserve[node] == nil {
		p.reserve[node] = map[types.UID][]string{}
	}
	if _, again := p.reserve[node][uid]; !again {
		p.reserved.Add(1)
	}
	p.reserve[node][uid] = devices
}

// Unreserve gives the devices back when the pod is not bound after all.
func (p *Plugin) Unreserve(ctx context.Context, state fwk.CycleState, pod *corev1.Pod, node string) {
	p.forget(pod.UID)
}

// Bind binds a VM pod with devices and records the devices on it in one
// call: the API server copies a Binding's annotations onto the pod, so the
// operator never sees the pod on a node without its devices, and the VM
// costs one write, as a pod without devices does. (Recording them in PreBind
// would cost two more: the patch, and the nominated node the scheduler
// records before any PreBind.) Other pods are left to DefaultBinder.
func (p *Plugin) Bind(ctx context.Context, state fwk.CycleState, pod *corev1.Pod, node string) *fwk.Status {
	d, err := state.Read(assignmentKey)
	if err != nil {
		return fwk.NewStatus(fwk.Skip)
	}
	a := d.(*assignmentState).a
	if len(a.GPUs) == 0 && len(a.VFs) == 0 {
		return fwk.NewStatus(fwk.Skip)
	}
	raw, err := json.Marshal(a)
	if err != nil {
		return fwk.AsStatus(err)
	}
	binding := &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID,
			Annotations: map[string]string{novacronv1.AnnotationAssignedDevices: string(raw)}},
		Target: corev1.ObjectReference{Kind: "Node", Name: node},
	}
	if c := p.handle.APICacher(); c != nil {
		onFinish, err := c.BindPod(binding)
		if err == nil {
			err = c.WaitOnFinish(ctx, onFinish)
		}
		if err != nil {
			return fwk.AsStatus(fmt.Errorf("binding pod %s/%s with its devices: %w", pod.Namespace, pod.Name, err))
		}
		return nil
	}
	if err := schedutil.BindPod(ctx, p.handle.ClientSet(), binding); err != nil {
		return fwk.AsStatus(fmt.Errorf("binding pod %s/%s with its devices: %w", pod.Namespace, pod.Name, err))
	}
	return nil
}
