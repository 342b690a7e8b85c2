package snapshot

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/conflict"
	"github.com/novacron/operator/operator/domain"
	"github.com/novacron/operator/operator/hypervisors"
	"github.com/novacron/operator/operator/metrics"
	"github.com/novacron/operator/operator/provider"
)

// RestoreReconciler puts VMs back to their snapshots.
//
// A restore works on a stopped VM: it stops a running one first when
// spec.stopVM says so (and starts it again afterwards), and refuses otherwise.
// While it reverts the domain the VM carries AnnotationRestoring, so the VM
// controller leaves the domain alone. A VM started again by its restore resumes
// from the snapshot's memory state when the snapshot has one; otherwise it
// boots from the restored disks.
type RestoreReconciler struct {
	Client      client.Client
	Recorder    events.EventRecorder
	Hypervisors provider.Connector
	Clock       clock.PassiveClock
	// Wait is how soon a restore waiting for its VM to stop looks again.
	Wait time.Duration
}

// +kubebuilder:rbac:groups=novacron.io,resources=virtualmachinerestores,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=novacron.io,resources=virtualmachinerestores/status,verbs=get;update;patch

// SetupWithManager registers the controller.
func (r *RestoreReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	if r.Wait == 0 {
		r.Wait = time.Second
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("virtualmachinerestore").
		For(&novacronv1.VirtualMachineRestore{}).
		Complete(conflict.Retry(metrics.Instrument("virtualmachinerestore", r)))
}

// Reconcile drives one restore from Pending to Succeeded or Failed: it
// checks the restore makes sense, gets the VM stopped and guarded, then
// reverts it.
func (r *RestoreReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	rs := &novacronv1.VirtualMachineRestore{}
	if err := r.Client.Get(ctx, req.NamespacedName, rs); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if rs.Status.Phase == novacronv1.RestoreSucceeded || rs.Status.Phase == novacronv1.RestoreFailed {
		return ctrl.Result{}, nil
	}
	v, snap, res, done, err := r.check(ctx, rs)
	if done || err != nil {
		return res, err
	}
	if rs.Status.Phase != novacronv1.RestoreInProgress {
		if res, done, err := r.prepare(ctx, rs, v, snap); done || err != nil {
			return res, err
		}
	}
	return r.revert(ctx, rs, v, snap)
}

// check reads the restore's VM and snapshot and fails the restore (done) when
// they do not belong together, or waits (done) while the snapshot is not
// ready or another restore holds the VM.
func (r *RestoreReconciler) check(ctx context.Context, rs *novacronv1.VirtualMachineRestore) (*novacronv1.VirtualMachine, *novacronv1.VirtualMachineSnapshot, ctrl.Result, bool, error) {
	v := &novacronv1.VirtualMachine{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: rs.Namespace, Name: rs.Spec.VMName}, v); err != nil {
		if apierrors.IsNotFound(err) {
			res, err := r.fail(ctx, rs, nil, novacronv1.ReasonVMNotFound, fmt.Sprintf("VirtualMachine %s does not exist", rs.Spec.VMName))
			return nil, nil, res, true, err
		}
		return nil, nil, ctrl.Result{}, true, err
	}
	snap := &novacronv1.VirtualMachineSnapshot{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: rs.Namespace, Name: rs.Spec.SnapshotName}, snap); err != nil {
		if apierrors.IsNotFound(err) {
			res, err := r.fail(ctx, rs, v, novacronv1.ReasonSnapshotNotFound, fmt.Sprintf("VirtualMachineSnapshot %s does not exist", rs.Spec.SnapshotName))
			return nil, nil, res, true, err
		}
		return nil, nil, ctrl.Result{}, true, err
	}
	var res ctrl.Result
	var err error
	switch other := v.Annotations[novacronv1.AnnotationRestoring]; {
	case snap.Spec.VMName != v.Name:
		res, err = r.fail(ctx, rs, v, novacronv1.ReasonWrongVM, fmt.Sprintf("snapshot %s is of VirtualMachine %s, not %s", snap.Name, snap.Spec.VMName, v.Name))
	case snap.Status.Phase == novacronv1.SnapshotFailed:
		res, err = r.fail(ctx, rs, v, novacronv1.ReasonSnapshotFailed, fmt.Sprintf("snapshot %s failed: %s", snap.Name, snap.Status.Why()))
	case !snap.Status.ReadyToUse || !snap.DeletionTimestamp.IsZero():
		res, err = r.wait(ctx, rs, fmt.Sprintf("snapshot %s is not ready to use", snap.Name))
	case snap.Status.NodeName != v.Status.NodeName:
		res, err = r.fail(ctx, rs, v, novacronv1.ReasonWrongNode, fmt.Sprintf("snapshot %s is on node %s but VirtualMachine %s is on node %s", snap.Name, snap.Status.NodeName, v.Name, v.Status.NodeName))
	case other != "" && other != rs.Name:
		res, err = r.wait(ctx, rs, fmt.Sprintf("restore %s of VirtualMachine %s is under way", other, v.Name))
	default:
		return v, snap, ctrl.Result{}, false, nil
	}
	return nil, nil, res, true, err
}

// prepare gets the VM stopped (stopping a running one when spec.stopVM says
// so, refusing otherwise), guards it, and records the restore InProgress.
func (r *RestoreReconciler) prepare(ctx context.Context, rs *novacronv1.VirtualMachineRestore, v *novacronv1.VirtualMachine, snap *novacronv1.VirtualMachineSnapshot) (ctrl.Result, bool, error) {
	if v.Spec.Running == nil || *v.Spec.Running {
		if !rs.Spec.StopVM {
			res, err := r.fail(ctx, rs, v, novacronv1.ReasonVMRunning, fmt.Sprintf("VirtualMachine %s is running; stop it first (spec.running: false) or set spec.stopVM: true on the restore", v.Name))
			return res, true, err
		}
		// Recorded first, so a restart after a crash still knows to start
		// the VM again.
		if meta.SetStatusCondition(&rs.Status.Conditions, metav1.Condition{Type: novacronv1.RestoreConditionStoppedVM, Status: metav1.ConditionTrue, Reason: novacronv1.ReasonStopVM,
			Message: "stopped VirtualMachine " + v.Name + " for the restore; it starts again afterwards", ObservedGeneration: rs.Generation}) {
			rs.Status.Phase = novacronv1.RestorePending
			if err := r.Client.Status().Update(ctx, rs); err != nil {
				return ctrl.Result{}, true, err
			}
		}
		if err := r.setRunning(ctx, v, false); err != nil {
			return ctrl.Result{}, true, err
		}
		r.Recorder.Eventf(rs, nil, corev1.EventTypeNormal, novacronv1.ReasonStoppingVM, novacronv1.ActionRestore, "stopping VirtualMachine %s for the restore", v.Name)
		res, err := r.wait(ctx, rs, fmt.Sprintf("VirtualMachine %s is stopping", v.Name))
		return res, true, err
	}
	if v.Status.Phase != novacronv1.VMStopped {
		res, err := r.wait(ctx, rs, fmt.Sprintf("VirtualMachine %s is %s, waiting for Stopped", v.Name, v.Status.Phase))
		return res, true, err
	}
	if err := r.guard(ctx, v, rs.Name); err != nil {
		return ctrl.Result{}, true, err
	}
	now := metav1.NewTime(r.Clock.Now())
	rs.Status.Phase = novacronv1.RestoreInProgress
	rs.Status.StartTime = &now
	setCondition(&rs.Status.Conditions, rs.Generation, metav1.ConditionFalse, novacronv1.ReasonInProgress, "reverting to snapshot "+snap.Name)
	if err := r.Client.Status().Update(ctx, rs); err != nil {
		return ctrl.Result{}, true, err
	}
	log.FromContext(ctx).Info("restore phase", "to", rs.Status.Phase, "vm", v.Name, "snapshot", snap.Name)
	return ctrl.Result{}, false, nil
}

// revert puts the stopped, guarded VM back to the snapshot, starts it again
// when the restore stopped it, and gives it back. Reverting again after a
// crash lands in the same state.
func (r *RestoreReconciler) revert(ctx context.Context, rs *novacronv1.VirtualMachineRestore, v *novacronv1.VirtualMachine, snap *novacronv1.VirtualMachineSnapshot) (ctrl.Result, error) {
	restart := meta.IsStatusConditionTrue(rs.Status.Conditions, novacronv1.RestoreConditionStoppedVM)
	if err := r.guard(ctx, v, rs.Name); err != nil {
		return ctrl.Result{}, err
	}
	_, hv, err := hypervisors.ForNode(ctx, r.Client, r.Hypervisors, snap.Status.NodeName)
	if err != nil {
		return ctrl.Result{}, err
	}
	if err := hv.RevertSnapshot(ctx, domain.DomainName(v), snap.Status.SnapshotName, restart && snap.Status.IncludesMemory); err != nil {
		return ctrl.Result{}, fmt.Errorf("restore %s/%s: %w", rs.Namespace, rs.Name, err)
	}
	if restart {
		if err := r.setRunning(ctx, v, true); err != nil {
			return ctrl.Result{}, err
		}
	}
	if err := r.guard(ctx, v, ""); err != nil {
		return ctrl.Result{}, err
	}
	msg := fmt.Sprintf("VirtualMachine %s restored to snapshot %s", v.Name, snap.Name)
	if restart {
		msg += " and started again"
	}
	if err := r.complete(ctx, rs, novacronv1.RestoreSucceeded, metav1.ConditionTrue, novacronv1.ReasonSucceeded, msg); err != nil {
		return ctrl.Result{}, err
	}
	r.Recorder.Eventf(rs, nil, corev1.EventTypeNormal, novacronv1.ReasonRestored, novacronv1.ActionRestore, "%s", msg)
	r.Recorder.Eventf(v, rs, corev1.EventTypeNormal, novacronv1.ReasonRestored, novacronv1.ActionRestore, "restored to snapshot %s", snap.Name)
	return ctrl.Result{}, nil
}

// guard sets (name) or clears ("") the VM's AnnotationRestoring.
func (r *RestoreReconciler) guard(ctx context.Context, v *novacronv1.VirtualMachine, name string) error {
	if v.Annotations[novacronv1.AnnotationRestoring] == name {
		return nil
	}
	patch := client.MergeFrom(v.DeepCopy())
	if name == "" {
		delete(v.Annotations, novacronv1.AnnotationRestoring)
	} else {
		if v.Annotations == nil {
			v.Annotations = map[string]string{}
		}
		v.Annotations[novacronv1.AnnotationRestoring] = name
	}
	return r.Client.Patch(ctx, v, patch)
}

func (r *RestoreReconciler) setRunning(ctx context.Context, v *novacronv1.VirtualMachine, running bool) error {
	if v.Spec.Running != nil && *v.Spec.Running == running {
		return nil
	}
	patch := client.MergeFrom(v.DeepCopy())
	v.Spec.Running = ptr.To(running)
	return r.Client.Patch(ctx, v, patch)
}

func (r *RestoreReconciler) wait(ctx context.Context, rs *novacronv1.VirtualMachineRestore, why string) (ctrl.Result, error) {
	if rs.Status.Phase == "" {
		rs.Status.Phase = novacronv1.RestorePending
	}
	rs.Status.ObservedGeneration = rs.Generation
	if setCondition(&rs.Status.Conditions, rs.Generation, metav1.ConditionFalse, novacronv1.ReasonWaiting, "waiting: "+why) || rs.Status.Phase == novacronv1.RestorePending {
		if err := r.Client.Status().Update(ctx, rs); err != nil {
			return ctrl.Result{}, err
		}
	}
	return ctrl.Result{RequeueAfter: r.Wait}, nil
}

// fail ends the restore, and gives the VM back if the restore held it.
func (r *RestoreReconciler) fail(ctx context.Context, rs *novacronv1.VirtualMachineRestore, v *novacronv1.VirtualMachine, reason, msg string) (ctrl.Result, error) {
	if v != nil && v.Annotations[novacronv1.AnnotationRestoring] == rs.Name {
		if err := r.guard(ctx, v, ""); err != nil {
			return ctrl.Result{}, err
		}
	}
	if err := r.complete(ctx, rs, novacronv1.RestoreFailed, metav1.ConditionFalse, reason, msg); err != nil {
		return ctrl.Result{}, err
	}
	r.Recorder.Eventf(rs, nil, corev1.EventTypeWarning, reason, novacronv1.ActionRestore, "%s", msg)
	return ctrl.Result{}, nil
}

// complete records the restore's end in its status.
func (r *RestoreReconciler) complete(ctx context.Context, rs *novacronv1.VirtualMachineRestore, phase novacronv1.RestorePhase, ready metav1.ConditionStatus, reason, msg string) error {
	now := metav1.NewTime(r.Clock.Now())
	rs.Status.Phase = phase
	rs.Status.CompletionTime = &now
	rs.Status.ObservedGeneration = rs.Generation
	setCondition(&rs.Status.Conditions, rs.Generation, ready, reason, msg)
	if err := r.Client.Status().Update(ctx, rs); err != nil {
		return err
	}
	log.FromContext(ctx).Info("restore phase", "to", phase, "vm", rs.Spec.VMName, "snapshot", rs.Spec.SnapshotName, "reason", reason)
	return nil
}
