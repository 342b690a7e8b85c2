package vm

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/devices/discovery"
	"github.com/novacron/operator/operator/launcher"
	"github.com/novacron/operator/operator/provider"
)

const gpuA, gpuB = "0000:3b:00.0", "0000:5e:00.0"

// gpuEnv is newEnv with two tesla-t4s on node-1, in its Hypervisor and its
// ResourceSlice as novacron-node publishes them.
func gpuEnv(t *testing.T) *env {
	e := newEnv(t)
	hv := &novacronv1.Hypervisor{}
	require.NoError(t, e.Client.Get(t.Context(), client.ObjectKey{Name: "node-1"}, hv))
	slice := &resourceapi.ResourceSlice{ObjectMeta: metav1.ObjectMeta{Name: "node-1-gpus"}, Spec: resourceapi.ResourceSliceSpec{
		Driver: discovery.DriverName, NodeName: ptr.To("node-1"), Pool: resourceapi.ResourcePool{Name: "node-1", ResourceSliceCount: 1}}}
	for _, pci := range []string{gpuA, gpuB} {
		hv.Status.GPUs = append(hv.Status.GPUs, novacronv1.GPU{Vendor: "nvidia", Model: "tesla-t4", PCIAddress: pci})
		slice.Spec.Devices = append(slice.Spec.Devices, resourceapi.Device{Name: discovery.DeviceName(discovery.TypeGPU, pci),
			Attributes: map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{
				"type": {StringValue: ptr.To("gpu")}, "vendor": {StringValue: ptr.To("nvidia")}, "model": {StringValue: ptr.To("tesla-t4")},
				"resource.kubernetes.io/pciBusID": {StringValue: ptr.To(pci)}}})
	}
	// The host's own device, published by no one as a GPU: a forged
	// allocation may still name it.
	slice.Spec.Devices = append(slice.Spec.Devices, resourceapi.Device{Name: "disk-0000-00-17-0",
		Attributes: map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{"resource.kubernetes.io/pciBusID": {StringValue: ptr.To("0000:00:17.0")}}})
	require.NoError(t, e.Client.Status().Update(t.Context(), hv))
	require.NoError(t, e.Client.Create(t.Context(), slice))
	return e
}

func gpuVM(name string) *novacronv1.VirtualMachine {
	v := newVM(name)
	v.Spec.Template.Spec.Devices = []novacronv1.Device{{Type: novacronv1.DeviceTypeGPU, Vendor: "nvidia", Model: "tesla-t4", Count: 1}}
	return v
}

// bindWith binds the VM's launcher pod to node-1 with its device claim
// allocated the devices at pcis, as kube-scheduler's DynamicResources does;
// or as a forged allocation would.
func (e *env) bindWith(t *testing.T, name string, pcis ...string) {
	t.Helper()
	pod := &corev1.Pod{}
	require.NoError(t, e.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: launcher.PodName(name)}, pod))
	claim := &resourceapi.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: pod.Name + "-devices",
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID, Controller: ptr.To(true)}}}}
	if err := e.Client.Get(t.Context(), client.ObjectKeyFromObject(claim), claim); apierrors.IsNotFound(err) {
		require.NoError(t, e.Client.Create(t.Context(), claim))
	}
	claim.Status.Allocation = &resourceapi.AllocationResult{}
	for _, pci := range pcis {
		dev := discovery.DeviceName(discovery.TypeGPU, pci)
		if pci == "0000:00:17.0" {
			dev = "disk-0000-00-17-0"
		}
		claim.Status.Allocation.Devices.Results = append(claim.Status.Allocation.Devices.Results,
			resourceapi.DeviceRequestAllocationResult{Request: "gpu-0", Driver: discovery.DriverName, Pool: "node-1", Device: dev})
	}
	claim.Status.ReservedFor = []resourceapi.ResourceClaimConsumerReference{{Resource: "pods", Name: pod.Name, UID: pod.UID}}
	require.NoError(t, e.Client.Status().Update(t.Context(), claim))
	pod.Spec.NodeName = "node-1"
	require.NoError(t, e.Client.Update(t.Context(), pod))
	pod.Status.ResourceClaimStatuses = []corev1.PodResourceClaimStatus{{Name: "devices", ResourceClaimName: ptr.To(claim.Name)}}
	require.NoError(t, e.Client.Status().Update(t.Context(), pod))
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
	assert.Equal(t, novacronv1.VMRunning, plain.Status.Phase)
	assert.Empty(t, plain.Status.Devices, "a VM that asks for no GPU gets none, whatever a claim says")
	d, _, _ = e.host.Domain("team_plain")
	assert.Empty(t, d.HostDevices)
}

// The launcher pod claims its devices from the VM's own template; a
// template of that name a tenant wrote first is refused, never used, and
// the VM's templates of older specs go.
func TestTheVMsClaimTemplateIsItsOwn(t *testing.T) {
	e := gpuEnv(t)
	v := gpuVM("a")
	e.create(t, v)
	want := launcher.ClaimTemplate(e.vm(t, "a"), launcher.Config{}, nil)
	forged := want.DeepCopy()
	forged.OwnerReferences = nil
	require.NoError(t, e.Client.Create(t.Context(), forged))
	e.reconcile(t, "a")
	got := e.vm(t, "a")
	assert.Equal(t, novacronv1.ReasonBadDeviceAssignment, condition(got, novacronv1.ConditionReady).Reason)
	assert.Contains(t, condition(got, novacronv1.ConditionReady).Message, "is not the one NovaCron makes")
	pod := &corev1.Pod{}
	assert.True(t, apierrors.IsNotFound(e.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "a-launcher"}, pod)), "no pod claims from a foreign template")

	require.NoError(t, e.Client.Delete(t.Context(), forged))
	got.Spec.Template.Spec.Devices[0].Count = 2
	require.NoError(t, e.Client.Update(t.Context(), got))
	e.reconcile(t, "a")
	require.NoError(t, e.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "a-launcher"}, pod))
	two := launcher.ClaimTemplate(e.vm(t, "a"), launcher.Config{}, nil)
	assert.Equal(t, two.Name, *pod.Spec.ResourceClaims[0].ResourceClaimTemplateName)
	tmpl := &resourceapi.ResourceClaimTemplate{}
	require.NoError(t, e.Client.Get(t.Context(), client.ObjectKeyFromObject(two), tmpl))
	assert.Equal(t, int64(2), tmpl.Spec.Spec.Devices.Requests[0].Exactly.Count)
	assert.True(t, metav1.IsControlledBy(tmpl, e.vm(t, "a")))
}

func TestTheRecordNotThePodSaysWhichDevicesAVMHas(t *testing.T) {
	e := gpuEnv(t)
	e.startWith(t, gpuVM("a"), gpuA)
	// The claim's allocation is rewritten after the fact.
	e.bindWith(t, "a", gpuB)
	e.host.SetState("team_a", provider.StateShutoff) // powered off behind our back: defined and started again
	e.reconcile(t, "a")
	a := e.vm(t, "a")
	require.Len(t, a.Status.Devices, 1)
	assert.Equal(t, gpuA, a.Status.Devices[0].PCIAddress)
	d, _, _ := e.host.Domain("team_a")
	assert.Equal(t, []string{gpuA}, d.HostDevices)
}
