package vmplacement

import (
	"context"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	fwk "k8s.io/kube-scheduler/framework"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
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
	if s.req.hasDevices() {
		var reason string
		a, reason = assign(&s.req, e.hv, p.usage(e, ni, pod).devices, p.args.NUMAAlignment)
		if reason != "" {
			return fwk.NewStatus(fwk.Unschedulable, reason)
		}
	}
	var devices []string
	for _, g := range a.GPUs {
		devices = append(devices, g.PCIAddress)
	}
	for _, vf := range a.VFs {
		devices = append(devices, vf)
	}
	if len(devices) > 0 {
		p.mu.Lock()
		if p.reserve[node] == nil {
			p.reserve[node] = map[types.UID][]string{}
		}
		if _, again := p.reserve[node][pod.UID]; !again {
			p.reserved.Add(1)
		}
		p.reserve[node][pod.UID] = devices
		p.mu.Unlock()
	}
	state.Write(assignmentKey, &assignmentState{a: a})
	return nil
}

// Unreserve gives the devices back when the pod is not bound after all.
func (p *Plugin) Unreserve(ctx context.Context, state fwk.CycleState, pod *corev1.Pod, node string) {
	p.forget(pod.UID)
}

// PreBindPreFlight says PreBind has work only for VMs with devices.
func (p *Plugin) PreBindPreFlight(ctx context.Context, state fwk.CycleState, pod *corev1.Pod, node string) (*fwk.PreBindPreFlightResult, *fwk.Status) {
	d, err := state.Read(assignmentKey)
	if err != nil || (len(d.(*assignmentState).a.GPUs) == 0 && len(d.(*assignmentState).a.VFs) == 0) {
		return nil, fwk.NewStatus(fwk.Skip)
	}
	return &fwk.PreBindPreFlightResult{AllowParallel: true}, nil
}

// PreBind records the chosen devices on the pod, where the operator reads them.
func (p *Plugin) PreBind(ctx context.Context, state fwk.CycleState, pod *corev1.Pod, node string) *fwk.Status {
	d, err := state.Read(assignmentKey)
	if err != nil {
		return nil
	}
	a := d.(*assignmentState).a
	if len(a.GPUs) == 0 && len(a.VFs) == 0 {
		return nil
	}
	raw, err := json.Marshal(a)
	if err != nil {
		return fwk.AsStatus(err)
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{novacronv1.AnnotationAssignedDevices: string(raw)}}})
	if err != nil {
		return fwk.AsStatus(err)
	}
	if _, err := p.handle.ClientSet().CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fwk.AsStatus(fmt.Errorf("recording devices on pod %s/%s: %w", pod.Namespace, pod.Name, err))
	}
	return nil
}
