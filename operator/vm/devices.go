package vm

import (
	"context"
	"fmt"
	"slices"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/devices"
	"github.com/novacron/operator/operator/domain"
	"github.com/novacron/operator/operator/hypervisors"
	"github.com/novacron/operator/operator/launcher"
)

// +kubebuilder:rbac:groups=resource.k8s.io,resources=resourceclaimtemplates,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups=resource.k8s.io,resources=resourceclaims,verbs=get;list;watch

// ensureClaimTemplate makes the ResourceClaimTemplate the VM's launcher pod
// claims its devices by, and removes the VM's templates of older specs. A
// template of that name which is not this VM's (a tenant may write
// templates in the namespace) is refused, never used.
func (r *Reconciler) ensureClaimTemplate(ctx context.Context, vm *novacronv1.VirtualMachine, want *resourceapi.ResourceClaimTemplate) error {
	var own resourceapi.ResourceClaimTemplateList
	if err := r.Client.List(ctx, &own, client.InNamespace(vm.Namespace), client.MatchingLabels{novacronv1.LabelVM: vm.Name}); err != nil {
		return fmt.Errorf("listing the ResourceClaimTemplates of VirtualMachine %s/%s: %w", vm.Namespace, vm.Name, err)
	}
	for i := range own.Items {
		t := &own.Items[i]
		if t.Name != want.Name && metav1.IsControlledBy(t, vm) {
			if err := r.Client.Delete(ctx, t, client.Preconditions{UID: &t.UID}); client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("deleting ResourceClaimTemplate %s/%s of an older spec: %w", t.Namespace, t.Name, err)
			}
		}
	}
	err := r.Client.Create(ctx, want)
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	got := &resourceapi.ResourceClaimTemplate{}
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(want), got); err != nil {
		return err
	}
	if !metav1.IsControlledBy(got, vm) || !equality.Semantic.DeepEqual(got.Spec, want.Spec) {
		return domain.SpecErrorf(novacronv1.ReasonBadDeviceAssignment,
			"ResourceClaimTemplate %s/%s is not the one NovaCron makes for the VM's devices; delete it", got.Namespace, got.Name)
	}
	return nil
}

// assignedDevices are the devices the VM uses on s.node: what DRA allocated
// in the launcher pod's claim, each device's PCI address from the node's
// ResourceSlices. They are checked once against the VM's request, the
// node's inventory and the other VMs there, recorded in the VM's status
// (which tenants cannot write), and read from that record after.
func (r *Reconciler) assignedDevices(ctx context.Context, s *runScope) (novacronv1.DeviceAssignment, error) {
	if a := s.vm.Status.AssignedDevices(); !a.Empty() {
		return a, nil
	}
	pools, err := devices.VFPools(ctx, devices.ReadNetworks(r.APIReader), s.vm)
	if devices.IsVMError(err) {
		return novacronv1.DeviceAssignment{}, domain.SpecErrorf(novacronv1.ReasonNetworkNotFound, "%v", err)
	}
	if err != nil {
		return novacronv1.DeviceAssignment{}, err
	}
	req := devices.RequestFor(&s.vm.Spec.Template.Spec, pools)
	if !req.HasDevices() {
		return novacronv1.DeviceAssignment{}, nil
	}
	results, err := r.allocation(ctx, s)
	if err != nil {
		return novacronv1.DeviceAssignment{}, err
	}
	nodeSlices, err := hypervisors.SlicesOn(ctx, r.Client, s.node)
	if err != nil {
		return novacronv1.DeviceAssignment{}, err
	}
	a, err := devices.FromAllocation(&req, results, s.node, nodeSlices)
	if err != nil {
		return a, domain.SpecErrorf(novacronv1.ReasonBadDeviceAssignment, "launcher pod %s: %v", s.pod.Name, err)
	}
	if why := devices.Validate(a, &req, s.hvObj, nil); why != "" {
		return a, domain.SpecErrorf(novacronv1.ReasonBadDeviceAssignment, "launcher pod %s: %s", s.pod.Name, why)
	}
	taken, err := r.devicesTaken(ctx, s.vm, s.node)
	if err != nil {
		return a, err
	}
	if why := devices.Validate(a, &req, s.hvObj, taken); why != "" {
		// DRA gave out a device whose last VM this cache still shows on it
		// (stopping, or deleted a moment ago). The VM waits.
		return a, &devicesHeld{fmt.Sprintf("launcher pod %s: %s; waiting for it to be freed", s.pod.Name, why)}
	}
	return a, nil
}

// allocation is what DRA allocated for the launcher pod: the results of
// the claim kube-controller-manager made it, which the scheduler allocated
// and reserved for this very pod.
func (r *Reconciler) allocation(ctx context.Context, s *runScope) ([]resourceapi.DeviceRequestAllocationResult, error) {
	if len(s.pod.Spec.ResourceClaims) == 0 {
		// Made by a NovaCron from before DRA, bound but not yet recorded.
		return nil, domain.SpecErrorf(novacronv1.ReasonBadDeviceAssignment,
			"launcher pod %s claims no devices (made by an older NovaCron); delete it and a new one is made", s.pod.Name)
	}
	name := launcher.ClaimName(s.pod)
	if name == "" {
		return nil, &devicesHeld{fmt.Sprintf("launcher pod %s has no device claim yet", s.pod.Name)}
	}
	claim := &resourceapi.ResourceClaim{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: s.pod.Namespace, Name: name}, claim); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, &devicesHeld{fmt.Sprintf("launcher pod %s: its device claim %s is not in the cache yet", s.pod.Name, name)}
		}
		return nil, err
	}
	reserved := slices.ContainsFunc(claim.Status.ReservedFor, func(c resourceapi.ResourceClaimConsumerReference) bool {
		return c.Resource == "pods" && c.UID == s.pod.UID
	})
	if !metav1.IsControlledBy(claim, s.pod) || claim.Status.Allocation == nil || !reserved {
		return nil, &devicesHeld{fmt.Sprintf("launcher pod %s: its device claim %s is not allocated to it yet", s.pod.Name, name)}
	}
	return claim.Status.Allocation.Devices.Results, nil
}

// devicesHeld is an assignment that is the node's and what the VM asked for,
// with a device another VM still holds, or one DRA has not finished.
type devicesHeld struct{ msg string }

func (e *devicesHeld) Error() string { return e.msg }

// forgetDevices drops the record when the VM gets a new launcher pod, which
// DRA allocates afresh.
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
