package lifecycle

import (
	"context"
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/devices/discovery"
	"github.com/novacron/operator/test/testenv"
)

// slicedDevice is a device of node-2's ResourceSlice as novacron-node
// publishes it, with the taints given.
func slicedDevice(kind, addr string, taints ...string) resourceapi.Device {
	d := resourceapi.Device{Name: discovery.DeviceName(kind, addr), Attributes: map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{
		"type": {StringValue: ptr.To(kind)}, "resource.kubernetes.io/pciBusID": {StringValue: ptr.To(addr)}}}
	for _, k := range taints {
		d.Taints = append(d.Taints, resourceapi.DeviceTaint{Key: k, Effect: resourceapi.DeviceTaintEffectNoSchedule})
	}
	return d
}

func devicesHealthy(v *novacronv1.VirtualMachine) *metav1.Condition {
	return meta.FindStatusCondition(v.Status.Conditions, novacronv1.VMConditionDevicesHealthy)
}

// A running VM whose GPU or VF novacron-node taints (unhealthy, gone from
// the bus) says so in its DevicesHealthy condition and a warning event, and
// keeps running; untainted, the condition is True again.
func TestAnUnhealthyDeviceShowsOnTheVM(t *testing.T) {
	startOperator(t)
	ctx := context.Background()
	nad := &unstructured.Unstructured{}
	nad.SetGroupVersionKind(schema.GroupVersionKind{Group: "k8s.cni.cncf.io", Version: "v1", Kind: "NetworkAttachmentDefinition"})
	nad.SetNamespace(ns)
	nad.SetName("data")
	nad.SetAnnotations(map[string]string{"k8s.v1.cni.cncf.io/resourceName": "intel.com/sriov_data"})
	if err := env.Client.Create(ctx, nad); !apierrors.IsAlreadyExists(err) {
		require.NoError(t, err)
		t.Cleanup(func() { _ = env.Client.Delete(context.Background(), nad) })
	}
	v := newVM("sick-device")
	v.Spec.Template.Spec.Devices = []novacronv1.Device{{Type: novacronv1.DeviceTypeGPU, Vendor: "nvidia", Model: "tesla-t4", Count: 1}}
	v.Spec.Template.Spec.Networks = append(v.Spec.Template.Spec.Networks, novacronv1.Network{Name: "data", Type: novacronv1.NetworkTypeSRIOV})
	create(t, v)
	bind(t, v.Name, "node-2", &novacronv1.DeviceAssignment{GPUs: []novacronv1.AssignedDevice{{Type: novacronv1.DeviceTypeGPU, Vendor: "nvidia", Model: "tesla-t4", PCIAddress: "0000:3b:00.0"}},
		VFs: map[string]string{"data": "0000:5e:02.1"}})
	got := waitVM(t, v.Name, "Running with its devices healthy", func(v *novacronv1.VirtualMachine) bool {
		c := devicesHealthy(v)
		return v.Status.Phase == novacronv1.VMRunning && c != nil && c.Status == metav1.ConditionTrue
	})
	assert.Equal(t, novacronv1.ReasonDevicesHealthy, devicesHealthy(got).Reason)

	slice := &resourceapi.ResourceSlice{ObjectMeta: metav1.ObjectMeta{Name: "node-2-devices"}, Spec: resourceapi.ResourceSliceSpec{
		Driver: discovery.DriverName, NodeName: ptr.To("node-2"), Pool: resourceapi.ResourcePool{Name: "node-2", ResourceSliceCount: 1},
		Devices: []resourceapi.Device{slicedDevice(discovery.TypeGPU, "0000:3b:00.0", discovery.TaintUnhealthy), slicedDevice(discovery.TypeVF, "0000:5e:02.1")}}}
	require.NoError(t, env.Client.Create(ctx, slice))
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), slice) })
	got = waitVM(t, v.Name, "DevicesHealthy False", func(v *novacronv1.VirtualMachine) bool {
		c := devicesHealthy(v)
		return c != nil && c.Status == metav1.ConditionFalse
	})
	c := devicesHealthy(got)
	assert.Equal(t, novacronv1.ReasonDeviceUnhealthy, c.Reason)
	assert.Equal(t, "on node node-2: nvidia tesla-t4 gpu at 0000:3b:00.0: devices.novacron.io/unhealthy; the VM keeps running, new VMs are not placed on them", c.Message)
	assert.Equal(t, novacronv1.VMRunning, got.Status.Phase, "the VM keeps running")
	env.WaitEvents(t, key(v.Name), timeout, "a DeviceUnhealthy warning", testenv.HasNote(c.Message))

	// The GPU recovers, the VF goes from the bus.
	slice.Spec.Devices = []resourceapi.Device{slicedDevice(discovery.TypeGPU, "0000:3b:00.0"), slicedDevice(discovery.TypeVF, "0000:5e:02.1", discovery.TaintVanished)}
	require.NoError(t, env.Client.Update(ctx, slice))
	waitVM(t, v.Name, "the VF named", func(v *novacronv1.VirtualMachine) bool {
		c := devicesHealthy(v)
		return c != nil && c.Message == "on node node-2: the VF of network data at 0000:5e:02.1: devices.novacron.io/vanished; the VM keeps running, new VMs are not placed on them"
	})

	slice.Spec.Devices = []resourceapi.Device{slicedDevice(discovery.TypeGPU, "0000:3b:00.0"), slicedDevice(discovery.TypeVF, "0000:5e:02.1")}
	require.NoError(t, env.Client.Update(ctx, slice))
	waitVM(t, v.Name, "healthy again", func(v *novacronv1.VirtualMachine) bool {
		c := devicesHealthy(v)
		return c != nil && c.Status == metav1.ConditionTrue
	})
}
