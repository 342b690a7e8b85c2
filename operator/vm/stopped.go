package vm

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/domain"
	"github.com/novacron/operator/operator/hypervisors"
	"github.com/novacron/operator/operator/metrics"
	"github.com/novacron/operator/operator/provider"
)

// ensureStopped drives a VM whose spec says running: false: the guest powers
// off, its disks and definition stay on its node, and the launcher pod goes so
// the node's capacity is free while the VM is stopped.
func (r *Reconciler) ensureStopped(ctx context.Context, vm *novacronv1.VirtualMachine) (ctrl.Result, error) {
	if node := vm.Status.NodeName; node != "" {
		_, hv, err := r.hypervisor(ctx, node)
		if err != nil {
			return ctrl.Result{}, err
		}
		r.markReachable(vm, node)
		state, err := hv.State(ctx, domain.DomainName(vm))
		if err != nil && !errors.Is(err, provider.ErrNotFound) {
			return ctrl.Result{}, err
		}
		if state == provider.StateRunning || state == provider.StatePaused || state == provider.StateShutdown {
			if stopped, err := r.stopGuest(ctx, vm, hv, node); !stopped || err != nil {
				return ctrl.Result{}, err
			}
		}
	}
	if err := r.deleteLauncherPod(ctx, vm); err != nil {
		return ctrl.Result{}, err
	}
	vm.Status.LauncherPod, vm.Status.LauncherPodUID = "", ""
	forgetDevices(vm) // the next pod is assigned afresh; these are free now
	metrics.ForgetVM(vm.Namespace, vm.Name)
	r.Usage.Forget(vm.Namespace, vm.Name)
	r.setPhase(ctx, vm, novacronv1.VMStopped)
	r.setCondition(vm, novacronv1.ConditionReady, metav1.ConditionFalse, novacronv1.ReasonStopped, "spec.running is false")
	return ctrl.Result{}, nil
}

// stopGuest runs preStop, then shuts the guest down. It says whether the
// guest is off: a preStop hook still running, or failed under its Fail
// policy, keeps it running.
func (r *Reconciler) stopGuest(ctx context.Context, vm *novacronv1.VirtualMachine, hv provider.Hypervisor, node string) (bool, error) {
	if failed, err := r.hookFailed(ctx, vm, novacronv1.ReasonPreStopHookFailed); err != nil || failed {
		return false, err
	}
	if lc := vm.Spec.Template.Spec.Lifecycle; lc != nil && lc.PreStop != nil {
		outcome, herr := r.runHook(ctx, vm, hookPreStop, lc.PreStop)
		switch {
		case outcome == hookRunning:
			r.setPhase(ctx, vm, novacronv1.VMStopping)
			return false, herr
		case outcome == hookFailed && lc.PreStop.FailurePolicy != novacronv1.HookIgnore:
			r.setCondition(vm, novacronv1.VMConditionHooksSucceeded, metav1.ConditionFalse, novacronv1.ReasonPreStopHookFailed, fmt.Sprintf("preStop hook failed, so the VM keeps running (change the spec to try again): %v", herr))
			r.Recorder.Eventf(vm, nil, corev1.EventTypeWarning, novacronv1.ReasonHookFailed, novacronv1.ActionStop, "preStop hook failed; the VM keeps running: %v", herr)
			return false, nil
		case outcome == hookFailed:
			r.Recorder.Eventf(vm, nil, corev1.EventTypeWarning, novacronv1.ReasonHookFailed, novacronv1.ActionStop, "preStop hook failed (ignored by its failure policy): %v", herr)
		}
	}
	// Recorded before the shutdown, which may take the whole grace period.
	r.setPhase(ctx, vm, novacronv1.VMStopping)
	if err := r.Client.Status().Update(ctx, vm); err != nil {
		return false, err
	}
	r.Recorder.Eventf(vm, nil, corev1.EventTypeNormal, novacronv1.ReasonStopping, novacronv1.ActionStop, "shutting down the guest (forced off after %s)", r.StopGracePeriod)
	if err := hv.Shutdown(ctx, domain.DomainName(vm), r.StopGracePeriod); err != nil {
		return false, err
	}
	r.Recorder.Eventf(vm, nil, corev1.EventTypeNormal, novacronv1.ReasonStopped, novacronv1.ActionStop, "the guest is off on node %s", node)
	return true, nil
}

// deleteLauncherPod frees the VM's reservation.
func (r *Reconciler) deleteLauncherPod(ctx context.Context, vm *novacronv1.VirtualMachine) error {
	pod, err := r.launcherPod(ctx, vm)
	if errors.Is(err, errNotOurs) || errors.Is(err, errCacheBehind) {
		err = nil // ours, or one that claims the VM: it goes too
	}
	if err != nil || pod == nil || !pod.DeletionTimestamp.IsZero() {
		return err
	}
	return client.IgnoreNotFound(r.Client.Delete(ctx, pod))
}

// finalize removes the VM's domain and disks, then lets the VM go. While the
// hypervisor cannot be reached the VM stays, so no domain is left behind
// untracked.
func (r *Reconciler) finalize(ctx context.Context, vm *novacronv1.VirtualMachine) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(vm, Finalizer) {
		return ctrl.Result{}, nil
	}
	if r.migrating(ctx, vm) {
		// The domain is between two nodes: cancel the migration (deleting
		// it rolls it back, or resolves where the guest runs) and wait
		// for it to hand the VM back, so the domain is removed where it
		// is, never left running untracked on the other node.
		return ctrl.Result{RequeueAfter: time.Second}, r.cancelMigration(ctx, vm)
	}
	if node := vm.Status.NodeName; node != "" {
		hvObj, hv, err := r.hypervisor(ctx, node)
		switch {
		case apierrors.IsNotFound(err): // the Hypervisor object, not a domain
			r.Recorder.Eventf(vm, nil, corev1.EventTypeWarning, novacronv1.ReasonHypervisorGone, novacronv1.ActionDelete, "Hypervisor %s no longer exists; domain %s may remain on that node", node, domain.DomainName(vm))
		case err != nil:
			return ctrl.Result{}, err
		default:
			if removed, err := r.removeDomain(ctx, vm, hvObj, hv); !removed || err != nil {
				return ctrl.Result{}, err
			}
		}
	}
	if err := r.deleteLauncherPod(ctx, vm); err != nil {
		return ctrl.Result{}, err
	}
	// Its snapshots lived in its disks; their objects go too (each one's
	// finalizer finds its domain gone).
	if err := r.Client.DeleteAllOf(ctx, &novacronv1.VirtualMachineSnapshot{}, client.InNamespace(vm.Namespace),
		client.MatchingLabels{novacronv1.LabelVM: vm.Name}); err != nil {
		return ctrl.Result{}, fmt.Errorf("deleting the snapshots of VM %s/%s: %w", vm.Namespace, vm.Name, err)
	}
	metrics.ForgetDeletedVM(vm.Namespace, vm.Name)
	r.Usage.Forget(vm.Namespace, vm.Name)
	r.Hooks.Forget(vm.UID)
	controllerutil.RemoveFinalizer(vm, Finalizer)
	return ctrl.Result{}, client.IgnoreNotFound(r.Client.Update(ctx, vm))
}

// cancelMigration deletes the migration that holds a VM being deleted.
func (r *Reconciler) cancelMigration(ctx context.Context, vm *novacronv1.VirtualMachine) error {
	m := &novacronv1.VirtualMachineMigration{}
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: vm.Namespace, Name: vm.Status.MigrationState.MigrationName}, m)
	if err != nil || !m.DeletionTimestamp.IsZero() {
		return client.IgnoreNotFound(err)
	}
	r.Recorder.Eventf(vm, m, corev1.EventTypeNormal, novacronv1.ReasonStopping, novacronv1.ActionDelete, "the VM is being deleted: cancelling migration %s first", m.Name)
	return client.IgnoreNotFound(r.Client.Delete(ctx, m, client.Preconditions{UID: &m.UID}))
}

// removeDomain runs preStop on a running guest (a delete cannot be refused:
// a failed hook is reported, not obeyed), then removes the domain and its
// disks. It says whether they are gone; a hook still running holds them.
func (r *Reconciler) removeDomain(ctx context.Context, vm *novacronv1.VirtualMachine, hvObj *novacronv1.Hypervisor, hv provider.Hypervisor) (bool, error) {
	name := domain.DomainName(vm)
	state, err := hv.State(ctx, name)
	if err != nil && !errors.Is(err, provider.ErrNotFound) {
		return false, err
	}
	if state != "" {
		uuid, ours, err := domain.Owner(ctx, hv, vm)
		if err != nil {
			return false, err
		}
		if !ours {
			// Another VM's domain of this name: not this VM's to remove, nor
			// are the disks it uses; this VM's own (named by its UID) go.
			r.Recorder.Eventf(vm, nil, corev1.EventTypeWarning, novacronv1.ReasonDomainConflict, novacronv1.ActionDelete,
				"node %s has a domain named %s that is not this VM's (UUID %s); leaving it", vm.Status.NodeName, name, uuid)
			return true, domain.DeleteVolumes(ctx, vm, hypervisors.Pool(hvObj), hv)
		}
		// A VM from before volumes were named by UID removes its disks under
		// their old names.
		if err := domain.AdoptLegacyVolumes(ctx, vm, true, hypervisors.Pool(hvObj), hv); err != nil {
			return false, err
		}
	}
	if state == provider.StateRunning || state == provider.StatePaused {
		if lc := vm.Spec.Template.Spec.Lifecycle; lc != nil && lc.PreStop != nil {
			outcome, herr := r.runHook(ctx, vm, hookPreStop, lc.PreStop)
			if outcome == hookRunning {
				r.setPhase(ctx, vm, novacronv1.VMStopping)
				return false, herr
			}
			if outcome == hookFailed {
				r.Recorder.Eventf(vm, nil, corev1.EventTypeWarning, novacronv1.ReasonHookFailed, novacronv1.ActionDelete, "preStop hook failed; deleting anyway: %v", herr)
			}
		}
		if err := hv.Shutdown(ctx, name, r.StopGracePeriod); err != nil {
			return false, err
		}
	}
	if err := hv.Undefine(ctx, name); err != nil {
		return false, err
	}
	if err := domain.DeleteVolumes(ctx, vm, hypervisors.Pool(hvObj), hv); err != nil {
		return false, err
	}
	r.Recorder.Eventf(vm, nil, corev1.EventTypeNormal, novacronv1.ReasonDeleted, novacronv1.ActionDelete, "removed domain %s and its disks from node %s", name, vm.Status.NodeName)
	log.FromContext(ctx).Info("domain removed", "domain", name, "node", vm.Status.NodeName)
	return true, nil
}
