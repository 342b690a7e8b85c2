package vm

import (
	"context"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/devices/discovery"
	"github.com/novacron/operator/operator/hypervisors"
)

// +kubebuilder:rbac:groups=resource.k8s.io,resources=resourceslices,verbs=get;list;watch

// showDeviceHealth sets the DevicesHealthy condition of a VM that holds host
// devices from the taints novacron-node puts on them in its node's
// ResourceSlice (an unhealthy GPU, a device gone from the bus). The VM keeps
// running: only new placements avoid a tainted device. A device turning
// unhealthy is a warning event.
func (r *Reconciler) showDeviceHealth(ctx context.Context, vm *novacronv1.VirtualMachine, node string) error {
	type held struct{ what, addr string }
	var devs []held
	for _, d := range vm.Status.Devices {
		devs = append(devs, held{fmt.Sprintf("%s %s %s", d.Vendor, d.Model, d.Type), d.PCIAddress})
	}
	for _, i := range vm.Status.Interfaces {
		if i.PCIAddress != "" {
			devs = append(devs, held{"the VF of network " + i.Name, i.PCIAddress})
		}
	}
	if len(devs) == 0 {
		meta.RemoveStatusCondition(&vm.Status.Conditions, novacronv1.VMConditionDevicesHealthy)
		return nil
	}
	slices, err := hypervisors.SlicesOn(ctx, r.Client, node)
	if err != nil {
		return err
	}
	taints := discovery.Taints(slices, node)
	var bad []string
	for _, d := range devs {
		var keys []string
		for _, t := range taints[d.addr] {
			keys = append(keys, t.Key)
		}
		if len(keys) > 0 {
			sort.Strings(keys)
			bad = append(bad, fmt.Sprintf("%s at %s: %s", d.what, d.addr, strings.Join(keys, ", ")))
		}
	}
	if len(bad) == 0 {
		r.setCondition(vm, novacronv1.VMConditionDevicesHealthy, metav1.ConditionTrue, novacronv1.ReasonDevicesHealthy,
			fmt.Sprintf("the VM's %d host devices on node %s are healthy", len(devs), node))
		return nil
	}
	msg := fmt.Sprintf("on node %s: %s; the VM keeps running, new VMs are not placed on them", node, strings.Join(bad, "; "))
	// An event per change of what is wrong, not per spec change.
	was := meta.FindStatusCondition(vm.Status.Conditions, novacronv1.VMConditionDevicesHealthy)
	changed := was == nil || was.Status != metav1.ConditionFalse || was.Message != msg
	r.setCondition(vm, novacronv1.VMConditionDevicesHealthy, metav1.ConditionFalse, novacronv1.ReasonDeviceUnhealthy, msg)
	if changed {
		r.Recorder.Eventf(vm, nil, corev1.EventTypeWarning, novacronv1.ReasonDeviceUnhealthy, novacronv1.ActionStart, "%s", msg)
	}
	return nil
}

// vmsOnSliceNode maps a ResourceSlice to the VMs on its node.
func (r *Reconciler) vmsOnSliceNode(ctx context.Context, o client.Object) []reconcile.Request {
	s, ok := o.(*resourceapi.ResourceSlice)
	if !ok || s.Spec.NodeName == nil || s.Spec.Driver != discovery.DriverName {
		return nil
	}
	return r.vmsOnNode(ctx, *s.Spec.NodeName)
}
