package vm

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/launcher"
	"github.com/novacron/operator/operator/provider"
)

const gpuA, gpuB = "0000:3b:00.0", "0000:5e:00.0"

// gpuEnv is newEnv with two tesla-t4s on node-1.
func gpuEnv(t *testing.T) *env {
	e := newEnv(t)
	hv := &novacronv1.Hypervisor{}
	require.NoError(t, e.Client.Get(t.Context(), client.ObjectKey{Name: "node-1"}, hv))
	for _, pci := range []string{gpuA, gpuB} {
		hv.Status.GPUs = append(hv.Status.GPUs, novacronv1.GPU{Vendor: "nvidia", Model: "tesla-t4", PCIAddress: pci})
	}
	require.NoError(t, e.Client.Status().Update(t.Context(), hv))
	return e
}

func gpuVM(name string) *novacronv1.VirtualMachine {
	v := newVM(name)
	v.Spec.Template.Spec.Devices = []novacronv1.Device{{Type: novacronv1.DeviceTypeGPU, Vendor: "nvidia", Model: "tesla-t4", Count: 1}}
	return v
}

// bindWith binds the VM's launcher pod with an assignment written on it, as
// the scheduler does, or as anyone who may patch pods in the namespace can.
func (e *env) bindWith(t *testing.T, name string, gpus ...string) {
	t.Helper()
	a := novacronv1.DeviceAssignment{}
	for _, pci := range gpus {
		a.GPUs = append(a.GPUs, novacronv1.AssignedDevice{Type: novacronv1.DeviceTypeGPU, Vendor: "nvidia", Model: "tesla-t4", PCIAddress: pci})
	}
	raw, err := json.Marshal(a)
	require.NoError(t, err)
	pod := &corev1.Pod{}
	require.NoError(t, e.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: launcher.PodName(name)}, pod))
	pod.Spec.NodeName = "node-1"
	pod.Annotations[novacronv1.AnnotationAssignedDevices] = string(raw)
	require.NoError(t, e.Client.Update(t.Context(), pod))
}

func (e *env) startWith(t *testing.T, v *novacronv1.VirtualMachine, gpus ...string) *novacronv1.VirtualMachine {
	t.Helper()
	e.create(t, v)
	e.reconcile(t, v.Name)
	e.bindWith(t, v.Name, gpus...)
	e.reconcile(t, v.Name)
	return e.vm(t, v.Name)
}

func TestOnlyTheNodesFreeDevicesOfTheKindAskedForReachTheDomain(t *testing.T) {
	e := gpuEnv(t)
	a := e.startWith(t, gpuVM("a"), gpuA)
	require.Equal(t, novacronv1.VMRunning, a.Status.Phase)
	d, _, _ := e.host.Domain("team_a")
	assert.Equal(t, []string{gpuA}, d.HostDevices)

	held := e.startWith(t, gpuVM("held"), gpuA)
	assert.Equal(t, novacronv1.ReasonDevicesHeld, condition(held, novacronv1.ConditionReady).Reason, "another VM's GPU: waits")
	assert.NotEqual(t, novacronv1.VMRunning, held.Status.Phase)
	_, _, defined := e.host.Domain("team_held")
	assert.False(t, defined)
	// Once a stops, its GPU is free: held starts with it.
	a.Spec.Running = ptr.To(false)
	require.NoError(t, e.Client.Update(t.Context(), a))
	e.reconcile(t, "a")
	require.Empty(t, e.vm(t, "a").Status.Devices, "a stopped VM holds no device")
	e.reconcile(t, "held")
	assert.Equal(t, novacronv1.VMRunning, e.vm(t, "held").Status.Phase)

	for name, forged := range map[string][]string{
		"the-hosts":     {"0000:00:17.0"},
		"twice":         {gpuB, gpuB},
		"none-assigned": nil,
	} {
		v := e.startWith(t, gpuVM(name), forged...)
		assert.Equal(t, novacronv1.VMFailed, v.Status.Phase, name)
		assert.Equal(t, novacronv1.ReasonBadDeviceAssignment, condition(v, novacronv1.ConditionReady).Reason, name)
		_, _, defined := e.host.Domain("team_" + name)
		assert.False(t, defined, "%s: nothing reaches the hypervisor", name)
	}
	plain := e.startWith(t, newVM("plain"), gpuB)
	assert.Equal(t, novacronv1.ReasonBadDeviceAssignment, condition(plain, novacronv1.ConditionReady).Reason, "a VM that asks for no GPU gets none")
}

func TestTheRecordNotThePodSaysWhichDevicesAVMHas(t *testing.T) {
	e := gpuEnv(t)
	e.startWith(t, gpuVM("a"), gpuA)
	// Someone with pod rights rewrites the annotation after the fact.
	e.bindWith(t, "a", gpuB)
	e.host.SetState("team_a", provider.StateShutoff) // powered off behind our back: defined and started again
	e.reconcile(t, "a")
	a := e.vm(t, "a")
	require.Len(t, a.Status.Devices, 1)
	assert.Equal(t, gpuA, a.Status.Devices[0].PCIAddress)
	d, _, _ := e.host.Domain("team_a")
	assert.Equal(t, []string{gpuA}, d.HostDevices)
}
