// Package snapshot runs VirtualMachineSnapshots (taken through the provider on
// the VM's node), VirtualMachineRestores, and VMs' snapshot schedules.
package snapshot

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/conflict"
	"github.com/novacron/operator/operator/domain"
	"github.com/novacron/operator/operator/hypervisors"
	"github.com/novacron/operator/operator/metrics"
	"github.com/novacron/operator/operator/provider"
)

// Finalizer keeps a VirtualMachineSnapshot until its hypervisor snapshot is
// deleted.
const Finalizer = "novacron.io/snapshot"

// Reconciler takes and deletes snapshots.
type Reconciler struct {
	Client client.Client
	// APIReader reads past the cache where two reconciles must not both act
	// (one snapshot at a time per VM).
	APIReader   client.Reader
	Recorder    events.EventRecorder
	Hypervisors provider.Connector
	Clock       clock.PassiveClock
	// MaxAttempts is how often a try that may pass (an unreachable
	// hypervisor) is made before the snapshot fails; RetryBase is the first
	// wait between tries, doubling after each.
	MaxAttempts int32
	RetryBase   time.Duration
	// Wait is how soon a snapshot waiting for its VM (no node yet, a
	// migration, another snapshot) looks again.
	Wait time.Duration
}

// +kubebuilder:rbac:groups=novacron.io,resources=virtualmachinesnapshots,verbs=get;list;watch;update;patch;delete;create
// +kubebuilder:rbac:groups=novacron.io,resources=virtualmachinesnapshots/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=novacron.io,resources=virtualmachinesnapshots/finalizers,verbs=update
// +kubebuilder:rbac:groups=novacron.io,resources=virtualmachinemigrations,verbs=get;list;watch

// SetupWithManager registers the controller.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	if r.MaxAttempts == 0 {
		r.MaxAttempts = 5
	}
	if r.RetryBase == 0 {
		r.RetryBase = 5 * time.Second
	}
	if r.Wait == 0 {
		r.Wait = 5 * time.Second
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("virtualmachinesnapshot").
		For(&novacronv1.VirtualMachineSnapshot{}).
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Complete(conflict.Retry(metrics.Instrument("virtualmachinesnapshot", r)))
}

// Reconcile takes the snapshot once, records what it holds, and deletes it
// from the hypervisor when the object goes.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	// Read past the cache: a retry due soon after our own status write must
	// see it, or it would call the hypervisor on a stale count of tries.
	snap := &novacronv1.VirtualMachineSnapshot{}
	if err := r.APIReader.Get(ctx, req.NamespacedName, snap); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !snap.DeletionTimestamp.IsZero() {
		return r.finalize(ctx, snap)
	}
	if !controllerutil.ContainsFinalizer(snap, Finalizer) || snap.Labels[novacronv1.LabelVM] != snap.Spec.VMName {
		// The label lets the VM's controllers find its snapshots by selector.
		controllerutil.AddFinalizer(snap, Finalizer)
		if snap.Labels == nil {
			snap.Labels = map[string]string{}
		}
		snap.Labels[novacronv1.LabelVM] = snap.Spec.VMName
		return ctrl.Result{}, r.Client.Update(ctx, snap)
	}
	if snap.Status.Phase == novacronv1.SnapshotReady || snap.Status.Phase == novacronv1.SnapshotFailed {
		return ctrl.Result{}, nil
	}

	v := &novacronv1.VirtualMachine{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: snap.Namespace, Name: snap.Spec.VMName}, v); err != nil {
		if apierrors.IsNotFound(err) {
			return r.fail(ctx, snap, novacronv1.ReasonVMNotFound, fmt.Sprintf("VirtualMachine %s does not exist", snap.Spec.VMName))
		}
		return ctrl.Result{}, err
	}
	if snap.Status.Phase != novacronv1.SnapshotInProgress {
		if why, err := r.blocked(ctx, snap, v); err != nil || why != "" {
			if err != nil {
				return ctrl.Result{}, err
			}
			return r.wait(ctx, snap, why)
		}
		// Recorded before the hypervisor is touched: the node and name say
		// where to look after a crash, and make it this VM's one snapshot
		// in progress.
		snap.Status.Phase = novacronv1.SnapshotInProgress
		snap.Status.NodeName = v.Status.NodeName
		snap.Status.SnapshotName = snap.Name
		snap.Status.ObservedGeneration = snap.Generation
		setCondition(&snap.Status.Conditions, snap.Generation, metav1.ConditionFalse, novacronv1.ReasonInProgress, "taking the snapshot on node "+v.Status.NodeName)
		if err := r.Client.Status().Update(ctx, snap); err != nil {
			return ctrl.Result{}, err
		}
		log.FromContext(ctx).Info("snapshot phase", "to", snap.Status.Phase, "vm", v.Name, "node", snap.Status.NodeName)
	}
	return r.take(ctx, snap, v)
}

// blocked says why the snapshot cannot be taken yet, or "".
func (r *Reconciler) blocked(ctx context.Context, snap *novacronv1.VirtualMachineSnapshot, v *novacronv1.VirtualMachine) (string, error) {
	if v.Status.NodeName == "" {
		return fmt.Sprintf("VirtualMachine %s has not been placed on a node yet", v.Name), nil
	}
	if !v.DeletionTimestamp.IsZero() {
		return fmt.Sprintf("VirtualMachine %s is being deleted", v.Name), nil
	}
	if v.Status.Phase == novacronv1.VMMigrating {
		return fmt.Sprintf("VirtualMachine %s is migrating", v.Name), nil
	}
	// Past the cache too: a migration created a moment ago must hold the
	// snapshot back.
	var migs novacronv1.VirtualMachineMigrationList
	if err := r.APIReader.List(ctx, &migs, client.InNamespace(snap.Namespace)); err != nil {
		return "", err
	}
	for _, m := range migs.Items {
		if m.Spec.VMName == v.Name && !m.Status.Phase.Done() {
			return fmt.Sprintf("migration %s of VirtualMachine %s is under way", m.Name, v.Name), nil
		}
	}
	if name := v.Annotations[novacronv1.AnnotationRestoring]; name != "" {
		return fmt.Sprintf("restore %s of VirtualMachine %s is under way", name, v.Name), nil
	}
	// One at a time per VM, read from the API server itself so two
	// reconciles never both see none in progress.
	var snaps novacronv1.VirtualMachineSnapshotList
	if err := r.APIReader.List(ctx, &snaps, client.InNamespace(snap.Namespace), client.MatchingLabels{novacronv1.LabelVM: v.Name}); err != nil {
		return "", err
	}
	for _, o := range snaps.Items {
		if o.Name != snap.Name && o.Status.Phase == novacronv1.SnapshotInProgress {
			return fmt.Sprintf("snapshot %s of VirtualMachine %s is in progress", o.Name, v.Name), nil
		}
	}
	return "", nil
}

// thaw thaws the guest after a quiesced snapshot failed: a freeze whose call
// was given up on, or lost with its connection, must not keep the guest
// frozen until its next snapshot. It asks afresh, on the connection there is
// now; a guest it cannot reach is thawed by the next try's failure.
func (r *Reconciler) thaw(ctx context.Context, snap *novacronv1.VirtualMachineSnapshot, v *novacronv1.VirtualMachine) {
	_, hv, err := hypervisors.ForNode(ctx, r.Client, r.Hypervisors, snap.Status.NodeName)
	if err == nil {
		err = hv.Thaw(ctx, domain.DomainName(v))
	}
	if err != nil {
		log.FromContext(ctx).Error(err, "thawing the guest after a failed quiesced snapshot", "vm", v.Name, "node", snap.Status.NodeName)
	}
}

// take asks the VM's node for the snapshot (a repeat after a crash finds the
// one already taken) and records it.
func (r *Reconciler) take(ctx context.Context, snap *novacronv1.VirtualMachineSnapshot, v *novacronv1.VirtualMachine) (ctrl.Result, error) {
	start := r.Clock.Now()
	_, hv, err := hypervisors.ForNode(ctx, r.Client, r.Hypervisors, snap.Status.NodeName)
	var taken provider.Snapshot
	if err == nil {
		taken, err = hv.CreateSnapshot(ctx, domain.DomainName(v), provider.SnapshotRequest{
			Name: snap.Status.SnapshotName, DiskOnly: snap.Spec.DiskOnly, Quiesce: snap.Spec.Quiesce,
			Description: fmt.Sprintf("VirtualMachineSnapshot %s/%s", snap.Namespace, snap.Name),
		})
	}
	switch {
	case errors.Is(err, provider.ErrUnsupported):
		return r.fail(ctx, snap, novacronv1.ReasonUnsupported, err.Error())
	case errors.Is(err, provider.ErrNotFound):
		return r.fail(ctx, snap, novacronv1.ReasonDomainNotFound, fmt.Sprintf("VirtualMachine %s has no domain on node %s: %v", v.Name, snap.Status.NodeName, err))
	case err != nil:
		if snap.Spec.Quiesce {
			r.thaw(ctx, snap, v)
		}
		snap.Status.FailedAttempts++
		if snap.Status.FailedAttempts >= r.MaxAttempts {
			return r.fail(ctx, snap, novacronv1.ReasonSnapshotFailed, fmt.Sprintf("gave up after %d tries: %v", snap.Status.FailedAttempts, err))
		}
		backoff := r.RetryBase << (snap.Status.FailedAttempts - 1)
		msg := fmt.Sprintf("try %d of %d failed, trying again in %s: %v", snap.Status.FailedAttempts, r.MaxAttempts, backoff, err)
		setCondition(&snap.Status.Conditions, snap.Generation, metav1.ConditionFalse, novacronv1.ReasonRetrying, msg)
		r.Recorder.Eventf(snap, nil, corev1.EventTypeWarning, novacronv1.ReasonRetrying, novacronv1.ActionSnapshot, "%s", msg)
		return ctrl.Result{RequeueAfter: backoff}, r.Client.Status().Update(ctx, snap)
	}

	now := metav1.NewTime(r.Clock.Now())
	snap.Status.Phase = novacronv1.SnapshotReady
	snap.Status.ReadyToUse = true
	created := now
	if !taken.CreationTime.IsZero() {
		created = metav1.NewTime(taken.CreationTime)
	}
	snap.Status.CreationTime = &created
	snap.Status.SizeBytes = taken.SizeBytes
	snap.Status.IncludesMemory = taken.IncludesMemory
	snap.Status.Consistency = novacronv1.SnapshotCrashConsistent
	if taken.Quiesced {
		snap.Status.Consistency = novacronv1.SnapshotGuestQuiesced
	}
	what := "disks"
	if taken.IncludesMemory {
		what = "disks and memory"
	}
	msg := fmt.Sprintf("snapshot of the %s taken on node %s (%s)", what, snap.Status.NodeName, snap.Status.Consistency)
	setCondition(&snap.Status.Conditions, snap.Generation, metav1.ConditionTrue, novacronv1.ReasonReady, msg)
	if err := r.Client.Status().Update(ctx, snap); err != nil {
		return ctrl.Result{}, err
	}
	metrics.SnapshotTaken(snap.Namespace, v.Name, r.Clock.Now().Sub(start), now.Time)
	log.FromContext(ctx).Info("snapshot phase", "to", snap.Status.Phase, "vm", v.Name, "node", snap.Status.NodeName, "memory", taken.IncludesMemory)
	r.Recorder.Eventf(snap, nil, corev1.EventTypeNormal, novacronv1.ReasonTaken, novacronv1.ActionSnapshot, "%s", msg)
	r.Recorder.Eventf(v, snap, corev1.EventTypeNormal, novacronv1.ReasonSnapshotTaken, novacronv1.ActionSnapshot, "snapshot %s taken (%s)", snap.Name, what)
	return ctrl.Result{}, nil
}

func (r *Reconciler) wait(ctx context.Context, snap *novacronv1.VirtualMachineSnapshot, why string) (ctrl.Result, error) {
	snap.Status.Phase = novacronv1.SnapshotPending
	snap.Status.ObservedGeneration = snap.Generation
	if setCondition(&snap.Status.Conditions, snap.Generation, metav1.ConditionFalse, novacronv1.ReasonWaiting, "waiting: "+why) {
		if err := r.Client.Status().Update(ctx, snap); err != nil {
			return ctrl.Result{}, err
		}
	}
	return ctrl.Result{RequeueAfter: r.Wait}, nil
}

func (r *Reconciler) fail(ctx context.Context, snap *novacronv1.VirtualMachineSnapshot, reason, msg string) (ctrl.Result, error) {
	snap.Status.Phase = novacronv1.SnapshotFailed
	snap.Status.ReadyToUse = false
	snap.Status.ObservedGeneration = snap.Generation
	setCondition(&snap.Status.Conditions, snap.Generation, metav1.ConditionFalse, reason, msg)
	if err := r.Client.Status().Update(ctx, snap); err != nil {
		return ctrl.Result{}, err
	}
	metrics.SnapshotFailed(snap.Namespace, snap.Spec.VMName)
	log.FromContext(ctx).Info("snapshot phase", "to", snap.Status.Phase, "vm", snap.Spec.VMName, "reason", reason)
	r.Recorder.Eventf(snap, nil, corev1.EventTypeWarning, reason, novacronv1.ActionSnapshot, "%s", msg)
	return ctrl.Result{}, nil
}

// finalize deletes the hypervisor's snapshot, then lets the object go. While
// the node cannot be reached the object stays, so nothing is left behind
// untracked; a node whose Hypervisor object is gone took its snapshots along.
func (r *Reconciler) finalize(ctx context.Context, snap *novacronv1.VirtualMachineSnapshot) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(snap, Finalizer) {
		return ctrl.Result{}, nil
	}
	if snap.Status.NodeName != "" && snap.Status.SnapshotName != "" {
		_, hv, err := hypervisors.ForNode(ctx, r.Client, r.Hypervisors, snap.Status.NodeName)
		switch {
		case apierrors.IsNotFound(err): // the Hypervisor object
			r.Recorder.Eventf(snap, nil, corev1.EventTypeWarning, novacronv1.ReasonHypervisorGone, novacronv1.ActionDelete, "Hypervisor %s no longer exists; nothing to delete there", snap.Status.NodeName)
		case err != nil:
			return ctrl.Result{}, err
		default:
			domain := domain.DomainName(&novacronv1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Namespace: snap.Namespace, Name: snap.Spec.VMName}})
			if err := hv.DeleteSnapshot(ctx, domain, snap.Status.SnapshotName); err != nil {
				return ctrl.Result{}, err
			}
		}
	}
	controllerutil.RemoveFinalizer(snap, Finalizer)
	return ctrl.Result{}, client.IgnoreNotFound(r.Client.Update(ctx, snap))
}

// setCondition sets the Ready condition and says whether it changed.
func setCondition(conds *[]metav1.Condition, gen int64, status metav1.ConditionStatus, reason, msg string) bool {
	return meta.SetStatusCondition(conds, metav1.Condition{Type: novacronv1.ConditionReady, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen})
}
