package vm

import (
	"context"
	"fmt"
	"k8s.io/apimachinery/pkg/api/meta"

	"k8s.io/apimachinery/pkg/util/sets"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/devices"
	"github.com/novacron/operator/operator/domain"
	"github.com/novacron/operator/operator/hypervisors"
	"github.com/novacron/operator/operator/launcher"
)

// assignedDevices are the devices the VM uses on s.node. novacron-scheduler
// writes them on the launcher pod, which anyone with pod rights in the
// namespace may edit too; so they are checked once against the node's
// inventory and the other VMs there, recorded in the VM's status (which
// tenants cannot write), and read from that record after.
func (r *Reconciler) assignedDevices(ctx context.Context, s *runScope) (novacronv1.DeviceAssignment, error) {
	if a := s.vm.Status.AssignedDevices(); !a.Empty() {
		return a, nil
	}
	a, err := launcher.Devices(s.pod)
	if err != nil {
		return a, domain.SpecErrorf(novacronv1.ReasonBadDeviceAssignment, "%v", err)
	}
	pools, err := devices.VFPools(ctx, devices.ReadNetworks(r.APIReader), s.vm)
	if devices.IsVMError(err) {
		return a, domain.SpecErrorf(novacronv1.ReasonNetworkNotFound, "%v", err)
	}
	if err != nil {
		return a, err
	}
	req := devices.RequestFor(&s.vm.Spec.Template.Spec, pools)
	if why := devices.Validate(a, &req, s.hvObj, nil); why != "" {
		return a, domain.SpecErrorf(novacronv1.ReasonBadDeviceAssignment, "launcher pod %s: %s", s.pod.Name, why)
	}
	taken, err := r.devicesTaken(ctx, s.vm, s.node)
	if err != nil {
		return a, err
	}
	if why := devices.Validate(a, &req, s.hvObj, taken); why != "" {
		// The scheduler gave out a device whose last VM this cache still
		// shows on it (stopping, or deleted a moment ago); or someone
		// rewrote the pod's assignment. Either way the VM waits.
		return a, &devicesHeld{fmt.Sprintf("launcher pod %s: %s; waiting for it to be freed", s.pod.Name, why)}
	}
	return a, nil
}

// devicesHeld is an assignment that is the node's and what the VM asked for,
// with a device another VM still holds.
type devicesHeld struct{ msg string }

func (e *devicesHeld) Error() string { return e.msg }

// forgetDevices drops the record when the VM gets a new launcher pod, which
// the scheduler assigns afresh.
func forgetDevices(vm *novacronv1.VirtualMachine) {
	vm.Status.Devices, vm.Status.Interfaces = nil, nil
	meta.RemoveStatusCondition(&vm.Status.Conditions, novacronv1.VMConditionDevicesHealthy)
}

// devicesTaken are the PCI addresses other VMs on node hold.
func (r *Reconciler) devicesTaken(ctx context.Context, vm *novacronv1.VirtualMachine, node string) (sets.Set[string], error) {
	vms, err := hypervisors.VMsOn(ctx, r.Client, node)
	if err != nil {
		return nil, err
	}
	taken := sets.New[string]()
	for i := range vms {
		if vms[i].Namespace == vm.Namespace && vms[i].Name == vm.Name {
			continue
		}
		taken.Insert(vms[i].Status.AssignedDevices().PCIAddresses()...)
	}
	return taken, nil
}
