package snapshot

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/robfig/cron/v3"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/conflict"
	"github.com/novacron/operator/operator/metrics"
)

// ScheduleReconciler takes a VM's scheduled snapshots (spec.snapshotPolicy)
// and keeps the newest `retention` of them.
//
// Each slot of the schedule gets at most one VirtualMachineSnapshot, named
// after the slot, so a repeat after a crash finds it rather than making a
// second. After downtime only the latest missed slot is taken (catch up once,
// not once per slot), and no slot is taken while the VM's previous scheduled
// snapshot is unfinished: the slot stays due until it is. The snapshot
// controller waits out migrations and other snapshots of the VM.
type ScheduleReconciler struct {
	Client   client.Client
	Recorder events.EventRecorder
	Clock    clock.PassiveClock
	// Resync bounds how long a VM waits for its next slot without a look, so
	// clock jumps (and fake clocks in tests) are noticed.
	Resync time.Duration
}

// SetupWithManager registers the controller.
func (r *ScheduleReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	if r.Resync == 0 {
		r.Resync = 5 * time.Minute
	}
	hasPolicy := predicate.NewPredicateFuncs(func(o client.Object) bool {
		v, ok := o.(*novacronv1.VirtualMachine)
		return ok && (v.Spec.SnapshotPolicy != nil || v.Status.Snapshot != nil)
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("snapshotschedule").
		For(&novacronv1.VirtualMachine{}, builder.WithPredicates(hasPolicy, predicate.GenerationChangedPredicate{})).
		Watches(&novacronv1.VirtualMachineSnapshot{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			if o.GetLabels()[novacronv1.LabelSnapshotScheduled] != "true" {
				return nil
			}
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetLabels()[novacronv1.LabelVM]}}}
		})).
		Complete(conflict.Retry(metrics.Instrument("snapshotschedule", r)))
}

// maxCatchUp bounds the walk over missed slots (a per-minute schedule after a
// long outage); beyond it the walk restarts a day before now.
const maxCatchUp = 10000

// Reconcile takes a due snapshot, applies retention and records the schedule.
func (r *ScheduleReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	v := &novacronv1.VirtualMachine{}
	if err := r.Client.Get(ctx, req.NamespacedName, v); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	orig := v.DeepCopy()
	policy := v.Spec.SnapshotPolicy
	if policy == nil || !v.DeletionTimestamp.IsZero() {
		v.Status.Snapshot = nil
		return ctrl.Result{}, r.patchStatus(ctx, v, orig)
	}
	st := v.Status.Snapshot
	if st == nil {
		st = &novacronv1.SnapshotScheduleStatus{}
		v.Status.Snapshot = st
	}
	sched, loc, err := novacronv1.ParseSchedule(policy.Schedule, policy.TimeZone)
	if err != nil {
		st.NextScheduleTime, st.LastResult, st.Message = nil, novacronv1.ScheduleResultFailed, "spec.snapshotPolicy."+err.Error()
		return ctrl.Result{}, r.patchStatus(ctx, v, orig)
	}

	var list novacronv1.VirtualMachineSnapshotList
	if err := r.Client.List(ctx, &list, client.InNamespace(v.Namespace),
		client.MatchingLabels{novacronv1.LabelVM: v.Name, novacronv1.LabelSnapshotScheduled: "true"}); err != nil {
		return ctrl.Result{}, err
	}
	scheduled := sortBySlot(list.Items)

	now := r.Clock.Now()
	since := v.CreationTimestamp.Time
	if st.LastScheduleTime != nil {
		since = st.LastScheduleTime.Time
	}
	if due := latestSlot(sched, loc, since, now); !due.IsZero() {
		if busy := unfinished(scheduled); busy != "" {
			st.Message = fmt.Sprintf("slot %s is due; waiting for snapshot %s to finish", due.Format(time.RFC3339), busy)
			if err := r.patchStatus(ctx, v, orig); err != nil {
				return ctrl.Result{}, err
			}
			return ctrl.Result{RequeueAfter: min(r.Resync, 10*time.Second)}, nil
		}
		name, err := r.take(ctx, v, due)
		if err != nil {
			return ctrl.Result{}, err
		}
		slot := metav1.NewTime(due)
		st.LastScheduleTime, st.LastSnapshotName = &slot, name
		// The snapshot's events bring us back for its result, but it may
		// have finished already (this is a retry after a lost status write),
		// leaving none to come: look again soon, to report it and prune.
		return ctrl.Result{RequeueAfter: min(r.Resync, 10*time.Second)}, r.patchStatus(ctx, v, orig)
	}

	if err := r.applyRetention(ctx, v, scheduled, int(policy.Retention)); err != nil {
		return ctrl.Result{}, err
	}
	if len(scheduled) > 0 {
		reportNewest(st, &scheduled[0])
	}
	// The next slot is after both now and the slots already counted (the
	// VM's creation, or the last slot taken), as latestSlot sees them: an
	// operator clock a little behind the API server's must not announce a
	// slot before the VM existed, which would never be taken.
	from := now
	if since.After(from) {
		from = since
	}
	next := sched.Next(from.In(loc))
	st.NextScheduleTime = &metav1.Time{Time: next}
	if err := r.patchStatus(ctx, v, orig); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: min(max(next.Sub(now), time.Second), r.Resync)}, nil
}

// reportNewest records the newest scheduled snapshot and how it went.
func reportNewest(st *novacronv1.SnapshotScheduleStatus, newest *novacronv1.VirtualMachineSnapshot) {
	st.LastSnapshotName = newest.Name
	switch newest.Status.Phase {
	case novacronv1.SnapshotReady:
		st.LastResult, st.Message = novacronv1.ScheduleResultSucceeded, fmt.Sprintf("snapshot %s taken", newest.Name)
	case novacronv1.SnapshotFailed:
		st.LastResult, st.Message = novacronv1.ScheduleResultFailed, fmt.Sprintf("snapshot %s failed: %s", newest.Name, newest.Status.Why())
	default:
		st.LastResult, st.Message = novacronv1.ScheduleResultInProgress, fmt.Sprintf("snapshot %s is %s", newest.Name, orPending(newest.Status.Phase))
	}
}

// latestSlot is the newest slot in (since, now], or zero if none.
func latestSlot(sched cron.Schedule, loc *time.Location, since, now time.Time) time.Time {
	var due time.Time
	t := since.In(loc)
	for i := 0; ; i++ {
		if i == maxCatchUp {
			i, t = 0, now.Add(-24*time.Hour).In(loc)
		}
		n := sched.Next(t)
		if n.IsZero() || n.After(now) {
			return due
		}
		due, t = n, n
	}
}

// take creates the snapshot for slot, unless it exists.
func (r *ScheduleReconciler) take(ctx context.Context, v *novacronv1.VirtualMachine, slot time.Time) (string, error) {
	name := fmt.Sprintf("%s-%s", v.Name, slot.UTC().Format("20060102-1504"))
	snap := &novacronv1.VirtualMachineSnapshot{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: v.Namespace,
			Labels:          map[string]string{novacronv1.LabelVM: v.Name, novacronv1.LabelSnapshotScheduled: "true"},
			Annotations:     map[string]string{novacronv1.AnnotationScheduledAt: slot.UTC().Format(time.RFC3339)},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(v, novacronv1.GroupVersion.WithKind("VirtualMachine"))},
		},
		Spec: novacronv1.VirtualMachineSnapshotSpec{VMName: v.Name},
	}
	if err := r.Client.Create(ctx, snap); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("creating scheduled snapshot %s/%s: %w", v.Namespace, name, err)
	}
	log.FromContext(ctx).Info("scheduled snapshot", "vm", v.Name, "snapshot", name, "slot", slot.UTC().Format(time.RFC3339))
	r.Recorder.Eventf(v, snap, corev1.EventTypeNormal, novacronv1.ReasonScheduledSnapshot, novacronv1.ActionSnapshot, "taking scheduled snapshot %s for %s", name, slot.UTC().Format(time.RFC3339))
	return name, nil
}

// applyRetention deletes Ready scheduled snapshots beyond the newest keep, and
// failed ones older than the newest Ready one. Unfinished ones and snapshots
// taken by hand are never touched.
func (r *ScheduleReconciler) applyRetention(ctx context.Context, v *novacronv1.VirtualMachine, newestFirst []novacronv1.VirtualMachineSnapshot, keep int) error {
	ready := 0
	for i := range newestFirst {
		s := &newestFirst[i]
		drop := false
		switch s.Status.Phase {
		case novacronv1.SnapshotReady:
			ready++
			drop = ready > keep
		case novacronv1.SnapshotFailed:
			drop = ready > 0
		}
		if !drop || !s.DeletionTimestamp.IsZero() {
			continue
		}
		if err := r.Client.Delete(ctx, s); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting scheduled snapshot %s/%s beyond retention %d: %w", s.Namespace, s.Name, keep, err)
		}
		r.Recorder.Eventf(v, s, corev1.EventTypeNormal, novacronv1.ReasonSnapshotRetired, novacronv1.ActionDelete, "deleted scheduled snapshot %s (retention %d)", s.Name, keep)
	}
	return nil
}

// sortBySlot orders scheduled snapshots newest slot first.
func sortBySlot(snaps []novacronv1.VirtualMachineSnapshot) []novacronv1.VirtualMachineSnapshot {
	slot := func(s *novacronv1.VirtualMachineSnapshot) time.Time {
		t, err := time.Parse(time.RFC3339, s.Annotations[novacronv1.AnnotationScheduledAt])
		if err != nil {
			return s.CreationTimestamp.Time
		}
		return t
	}
	sort.SliceStable(snaps, func(i, j int) bool { return slot(&snaps[i]).After(slot(&snaps[j])) })
	return snaps
}

// unfinished names a scheduled snapshot still being taken, or "".
func unfinished(snaps []novacronv1.VirtualMachineSnapshot) string {
	for _, s := range snaps {
		if s.DeletionTimestamp.IsZero() && s.Status.Phase != novacronv1.SnapshotReady && s.Status.Phase != novacronv1.SnapshotFailed {
			return s.Name
		}
	}
	return ""
}

func orPending(p novacronv1.SnapshotPhase) novacronv1.SnapshotPhase {
	if p == "" {
		return novacronv1.SnapshotPending
	}
	return p
}

// patchStatus writes status.snapshot if it changed, and only if the VM is
// still the version read: a decision made on a stale copy (an older
// lastScheduleTime) is never written back over a newer one.
func (r *ScheduleReconciler) patchStatus(ctx context.Context, v, orig *novacronv1.VirtualMachine) error {
	if equality.Semantic.DeepEqual(orig.Status.Snapshot, v.Status.Snapshot) {
		return nil
	}
	return r.Client.Status().Patch(ctx, v, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
}
