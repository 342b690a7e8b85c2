package vm

import (
	"context"
	"fmt"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/hooks"
)

// Hook kinds, as named in spec.template.spec.lifecycle.
const (
	hookPreStart = "preStart"
	hookPreStop  = "preStop"
)

// hookOutcome is where a hook run stands.
type hookOutcome int

const (
	hookSucceeded hookOutcome = iota
	hookRunning               // still runs; the VM is reconciled again when it ends
	hookFailed
)

// runHook runs one lifecycle hook for the VM's current generation. Hooks run
// at least once per start or stop; they must be safe to repeat. Neither kind
// blocks the reconcile: an HTTP call runs in the background (hooks.Caller),
// a Job in the cluster.
func (r *Reconciler) runHook(ctx context.Context, vm *novacronv1.VirtualMachine, kind string, hook *novacronv1.LifecycleHook) (hookOutcome, error) {
	if hook == nil {
		return hookSucceeded, nil
	}
	if hook.HTTP != nil {
		running, err := r.Hooks.Call(vm, kind, hook)
		switch {
		case running:
			r.setCondition(vm, novacronv1.VMConditionHooksSucceeded, metav1.ConditionUnknown, novacronv1.ReasonHookRunning, kind+" hook is being called")
			return hookRunning, nil
		case err != nil:
			return hookFailed, err
		}
		return hookSucceeded, nil
	}
	return r.runJobHook(ctx, vm, kind, hook)
}

func (r *Reconciler) runJobHook(ctx context.Context, vm *novacronv1.VirtualMachine, kind string, hook *novacronv1.LifecycleHook) (hookOutcome, error) {
	name := hooks.JobName(vm, kind)
	var job batchv1.Job
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: vm.Namespace, Name: name}, &job)
	if apierrors.IsNotFound(err) {
		return r.startJobHook(ctx, vm, kind, hook)
	}
	if err != nil {
		return hookRunning, err
	}
	if !metav1.IsControlledBy(&job, vm) {
		// Made by someone else, perhaps to pass for a hook the platform
		// mandates: its outcome says nothing.
		return hookFailed, fmt.Errorf("%s hook: Job %s exists but does not belong to this VM; delete or rename it", kind, name)
	}
	for _, c := range job.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobComplete, batchv1.JobSuccessCriteriaMet:
			return hookSucceeded, nil
		case batchv1.JobFailed, batchv1.JobFailureTarget:
			return hookFailed, fmt.Errorf("%s hook Job %s failed: %s: %s", kind, name, c.Reason, c.Message)
		}
	}
	return hookRunning, nil
}

func (r *Reconciler) startJobHook(ctx context.Context, vm *novacronv1.VirtualMachine, kind string, hook *novacronv1.LifecycleHook) (hookOutcome, error) {
	job, err := hooks.BuildJob(vm, kind, hook)
	if err != nil {
		return hookFailed, fmt.Errorf("%s hook may not run: %w", kind, err)
	}
	if err := r.deleteOldHookJobs(ctx, vm, kind, job.Name); err != nil {
		return hookRunning, err
	}
	err = r.ensureHookAccount(ctx, vm.Namespace)
	if err == nil {
		err = r.Client.Create(ctx, job)
	}
	switch {
	case err == nil:
	case apierrors.IsInvalid(err):
		return hookFailed, fmt.Errorf("%s hook Job template is not a valid Job: %w", kind, err)
	case apierrors.IsForbidden(err) && !vm.DeletionTimestamp.IsZero():
		// A namespace being deleted takes nothing new, and a delete cannot
		// wait for what will never be allowed.
		return hookFailed, fmt.Errorf("%s hook Job could not be made: %w", kind, err)
	default:
		return hookRunning, err
	}
	r.Recorder.Eventf(vm, nil, corev1.EventTypeNormal, novacronv1.ReasonHookStarted, novacronv1.ActionRun, "%s hook: started Job %s", kind, job.Name)
	return hookRunning, nil
}

// ensureHookAccount makes the namespace's hooks.ServiceAccount: no rights,
// no token.
func (r *Reconciler) ensureHookAccount(ctx context.Context, namespace string) error {
	sa := &corev1.ServiceAccount{
		ObjectMeta:                   metav1.ObjectMeta{Name: hooks.ServiceAccount, Namespace: namespace, Labels: map[string]string{novacronv1.LabelComponent: novacronv1.ComponentHook}},
		AutomountServiceAccountToken: ptr.To(false),
	}
	if err := r.Client.Create(ctx, sa); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating ServiceAccount %s/%s for hook Jobs: %w", namespace, hooks.ServiceAccount, err)
	}
	return nil
}

// deleteOldHookJobs removes the Jobs of earlier runs of the same hook.
func (r *Reconciler) deleteOldHookJobs(ctx context.Context, vm *novacronv1.VirtualMachine, kind, keep string) error {
	var jobs batchv1.JobList
	if err := r.Client.List(ctx, &jobs, client.InNamespace(vm.Namespace), client.MatchingLabels{novacronv1.LabelVM: vm.Name, novacronv1.LabelHook: kind}); err != nil {
		return err
	}
	for i := range jobs.Items {
		if jobs.Items[i].Name == keep || !metav1.IsControlledBy(&jobs.Items[i], vm) {
			continue
		}
		if err := r.Client.Delete(ctx, &jobs.Items[i], client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
			return err
		}
	}
	return nil
}
