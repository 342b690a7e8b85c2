package vm

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/domain"
	"github.com/novacron/operator/operator/metrics"
	"github.com/novacron/operator/operator/provider"
)

// setPhase changes the phase (kubectl get -w shows it) and logs the change.
func (r *Reconciler) setPhase(ctx context.Context, vm *novacronv1.VirtualMachine, p novacronv1.VMPhase) {
	if vm.Status.Phase != p {
		log.FromContext(ctx).Info("VM phase", "from", vm.Status.Phase, "to", p, "node", vm.Status.NodeName)
	}
	vm.Status.Phase = p
}

// setCondition sets a condition and says whether it changed.
func (r *Reconciler) setCondition(vm *novacronv1.VirtualMachine, typ string, status metav1.ConditionStatus, reason, msg string) bool {
	return meta.SetStatusCondition(&vm.Status.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: vm.Generation,
	})
}

// showSpecError fails the VM with a problem of its spec; the event is recorded
// once per problem, not on every look.
func (r *Reconciler) showSpecError(ctx context.Context, vm *novacronv1.VirtualMachine, before *novacronv1.VirtualMachineStatus, spec *domain.SpecError) {
	r.setPhase(ctx, vm, novacronv1.VMFailed)
	r.setCondition(vm, novacronv1.ConditionReady, metav1.ConditionFalse, spec.Reason, spec.Error())
	if before.Phase != novacronv1.VMFailed || conditionMessage(before.Conditions, novacronv1.ConditionReady) != spec.Error() {
		r.Recorder.Eventf(vm, nil, corev1.EventTypeWarning, spec.Reason, novacronv1.ActionStart, "%s", spec.Error())
	}
}

func (r *Reconciler) markUnreachable(ctx context.Context, vm *novacronv1.VirtualMachine, before *novacronv1.VirtualMachineStatus, err error) {
	r.setPhase(ctx, vm, novacronv1.VMUnknown)
	r.setCondition(vm, novacronv1.VMConditionHypervisorReachable, metav1.ConditionFalse, novacronv1.ReasonUnreachable, err.Error())
	r.setCondition(vm, novacronv1.ConditionReady, metav1.ConditionUnknown, novacronv1.ReasonHypervisorUnreachable, "the state of the VM is unknown while its hypervisor cannot be reached")
	if before.Phase != novacronv1.VMUnknown {
		r.Recorder.Eventf(vm, nil, corev1.EventTypeWarning, novacronv1.ReasonHypervisorUnreachable, novacronv1.ActionConnect, "%v", err)
	}
}

func (r *Reconciler) markReachable(vm *novacronv1.VirtualMachine, node string) {
	if r.setCondition(vm, novacronv1.VMConditionHypervisorReachable, metav1.ConditionTrue, novacronv1.ReasonConnected, fmt.Sprintf("connected to the hypervisor of node %s", node)) &&
		vm.Status.Phase == novacronv1.VMUnknown {
		r.Recorder.Eventf(vm, nil, corev1.EventTypeNormal, novacronv1.ReasonHypervisorReachable, novacronv1.ActionConnect, "the hypervisor of node %s answers again", node)
	}
}

// recordStats refreshes the VM's CPU and memory gauges, and its measured use,
// from domain stats.
func (r *Reconciler) recordStats(ctx context.Context, vm *novacronv1.VirtualMachine, hv provider.Hypervisor, node string) {
	stats, err := hv.Stats(ctx, domain.DomainName(vm))
	if err != nil {
		log.FromContext(ctx).V(1).Info("reading domain stats", "error", err)
		return
	}
	u, coresKnown := r.Usage.Observe(vm.Namespace, vm.Name, stats.CPUTime, float64(stats.MemoryUsedBytes), time.Now())
	var cores *float64
	if coresKnown {
		cores = &u.Cores
	}
	metrics.SetVMUsage(vm.Namespace, vm.Name, node, cores, u.MemoryBytes)
}

// hookFailed says whether a hook failed for the VM's current spec, in which
// case it is not run again until the spec changes. It reads the VM from the
// API server, not the cache: a cache that has not yet seen the failure would
// otherwise run the hook again.
func (r *Reconciler) hookFailed(ctx context.Context, vm *novacronv1.VirtualMachine, reason string) (bool, error) {
	fresh := &novacronv1.VirtualMachine{}
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(vm), fresh); err != nil {
		return false, err
	}
	for _, v := range []*novacronv1.VirtualMachine{vm, fresh} {
		c := meta.FindStatusCondition(v.Status.Conditions, novacronv1.VMConditionHooksSucceeded)
		if c != nil && c.Status == metav1.ConditionFalse && c.Reason == reason && c.ObservedGeneration == vm.Generation {
			if v == fresh {
				vm.Status.Conditions = fresh.Status.Conditions
			}
			return true, nil
		}
	}
	return false, nil
}

func conditionMessage(conds []metav1.Condition, typ string) string {
	if c := meta.FindStatusCondition(conds, typ); c != nil {
		return c.Message
	}
	return ""
}
