package livemigration

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

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/domain"
	"github.com/novacron/operator/operator/hypervisors"
	"github.com/novacron/operator/operator/provider"
)

// resolve finds where the VM runs after an operator restart mid-migration.
func (r *Reconciler) resolve(ctx context.Context, m *novacronv1.VirtualMachineMigration, v *novacronv1.VirtualMachine) (ctrl.Result, error) {
	_, src, err := hypervisors.ForNode(ctx, r.Client, r.Hypervisors, m.Status.SourceNode)
	if err != nil {
		return ctrl.Result{}, err
	}
	if p, err := src.MigrationProgress(ctx, domain.DomainName(v)); err == nil && !p.Completed && p.DataTotal > 0 {
		// The source's daemon still drives it: let it finish or fail, and
		// look again.
		m.Status.Progress = progress(p)
		return ctrl.Result{RequeueAfter: r.Poll}, r.Client.Status().Update(ctx, m)
	}
	// rollback finishes the migration instead when the guest runs only on
	// the target.
	return r.rollback(ctx, m, novacronv1.MigrationFailed, novacronv1.ReasonInterrupted, fmt.Sprintf("the operator restarted during the migration; the VM still runs on node %s, so it was rolled back", m.Status.SourceNode))
}

// rollback aborts the migration and removes everything on the target, as long
// as the VM still runs on the source; a VM found running only on the target is
// finished there instead.
func (r *Reconciler) rollback(ctx context.Context, m *novacronv1.VirtualMachineMigration, phase novacronv1.MigrationPhase, reason, msg string) (ctrl.Result, error) {
	r.jobs.stop(m.UID)
	v := &novacronv1.VirtualMachine{}
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: m.Spec.VMName}, v)
	if err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, err
	}
	if apierrors.IsNotFound(err) {
		v = nil
	}
	if v != nil && m.Status.TargetNode != "" && m.Status.Phase == novacronv1.MigrationRunning {
		res, handled, note, err := r.settle(ctx, m, v)
		if handled || err != nil {
			return res, err
		}
		msg += note
	}
	if m.Status.TargetPod != "" {
		if err := r.Client.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: m.Namespace, Name: m.Status.TargetPod}}); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, err
		}
	}
	if v != nil && v.Status.MigrationState != nil && v.Status.MigrationState.MigrationName == m.Name {
		if err := r.setVMState(ctx, v, nil); err != nil {
			return ctrl.Result{}, err
		}
	}
	return r.finish(ctx, m, v, phase, reason, msg)
}

// settle makes sure a migration that was copying ends with the guest on one
// node: the source's job is aborted; a guest safe on the source has the
// target's copy taken off (note says what could not be); a guest that
// switched over is finished on the target (handled); one that may have, on a
// target that cannot be reached, is waited for (handled).
func (r *Reconciler) settle(ctx context.Context, m *novacronv1.VirtualMachineMigration, v *novacronv1.VirtualMachine) (res ctrl.Result, handled bool, note string, err error) {
	name := domain.DomainName(v)
	_, src, err := hypervisors.ForNode(ctx, r.Client, r.Hypervisors, m.Status.SourceNode)
	if err != nil {
		return ctrl.Result{}, true, "", err
	}
	abortCtx, cancelAbort := context.WithTimeout(ctx, abortTimeout)
	_ = src.AbortMigration(abortCtx, name)
	cancelAbort()
	srcState, err := state(ctx, src, name)
	if err != nil {
		return ctrl.Result{}, true, "", err
	}
	if srcState != provider.StateRunning {
		// A paused or missing source may mean the guest switched over, so
		// the target says where it runs; an unreachable one is waited for
		// rather than guessed.
		res, handled, err := r.ifSwitchedOver(ctx, m, v, srcState)
		if handled || err != nil {
			return res, true, "", err
		}
	}
	if srcState == provider.StateRunning || srcState == provider.StatePaused {
		// The VM is safe on the source: take its unfinished copy off the
		// target. An unreachable target's libvirtd drops that copy (never
		// made persistent) when it is back; only its disks stay until then.
		err := r.clearTarget(ctx, m, v)
		if errors.Is(err, provider.ErrUnreachable) {
			return ctrl.Result{}, false, fmt.Sprintf("; node %s cannot be reached, so its unfinished copy is left to its libvirtd", m.Status.TargetNode), nil
		} else if err != nil {
			return ctrl.Result{}, true, "", err
		}
	}
	return ctrl.Result{}, false, "", nil
}

// ifSwitchedOver asks the target whether the guest runs there, when the
// source no longer runs it: then the migration is finished there; a target
// that cannot be reached is waited for (WaitingForTarget).
func (r *Reconciler) ifSwitchedOver(ctx context.Context, m *novacronv1.VirtualMachineMigration, v *novacronv1.VirtualMachine, srcState provider.DomainState) (ctrl.Result, bool, error) {
	_, tgt, err := hypervisors.ForNode(ctx, r.Client, r.Hypervisors, m.Status.TargetNode)
	var tgtState provider.DomainState
	if err == nil {
		tgtState, err = state(ctx, tgt, domain.DomainName(v))
	}
	if errors.Is(err, provider.ErrUnreachable) {
		where := "paused on node " + m.Status.SourceNode
		if srcState == "" {
			where = "gone from node " + m.Status.SourceNode
		}
		if setCondition(m, metav1.ConditionFalse, novacronv1.ReasonWaitingForTarget, fmt.Sprintf("the guest is %s and node %s, which may already run it, cannot be reached; waiting for node %s", where, m.Status.TargetNode, m.Status.TargetNode)) {
			if err := r.Client.Status().Update(ctx, m); err != nil {
				return ctrl.Result{}, true, err
			}
		}
		return ctrl.Result{RequeueAfter: r.Poll}, true, nil
	}
	if err != nil {
		return ctrl.Result{}, true, err
	}
	if tgtState == provider.StateRunning {
		res, err := r.succeed(ctx, m, v)
		return res, true, err
	}
	return ctrl.Result{}, false, nil
}

// clearTarget removes the VM's domain and disks from the migration's target.
func (r *Reconciler) clearTarget(ctx context.Context, m *novacronv1.VirtualMachineMigration, v *novacronv1.VirtualMachine) error {
	tgtObj, tgt, err := hypervisors.ForNode(ctx, r.Client, r.Hypervisors, m.Status.TargetNode)
	if err != nil {
		return err
	}
	return removeDomain(ctx, tgtObj, tgt, v)
}

// targetLost says why the target node cannot take the VM any more, or nil.
func (r *Reconciler) targetLost(ctx context.Context, m *novacronv1.VirtualMachineMigration) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, tgt, err := hypervisors.ForNode(ctx, r.Client, r.Hypervisors, m.Status.TargetNode)
	if err == nil {
		_, err = tgt.Info(ctx)
	}
	if errors.Is(err, provider.ErrUnreachable) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("node %s stopped answering during the migration, which was aborted: %v", m.Status.TargetNode, err)
	}
	return nil
}

// state is the domain's state, "" when it is not there.
func state(ctx context.Context, hv provider.Hypervisor, name string) (provider.DomainState, error) {
	st, err := hv.State(ctx, name)
	if errors.Is(err, provider.ErrNotFound) {
		return "", nil
	}
	return st, err
}
