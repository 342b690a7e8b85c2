// Package livemigration holds the controllers that move VMs live: the
// VirtualMachineMigration controller (a target launcher pod placed by
// novacron-scheduler, then a peer-to-peer live migration from the VM's node to
// the target's, with progress, cancel, limits and rollback), the drain
// controller that evacuates cordoned nodes, and the rebalancer. The rules they
// share (blockers, limits, capacity) are in the pure package migration.
//
// Every phase is recorded on the migration before its side effect, and the VM
// carries status.migrationState while it moves, so the VM controller leaves
// its domain alone. An operator restarted in the middle looks at both
// hypervisors: a guest already running on the target is finished there; one
// still on the source is rolled back there. A domain is never left active on
// both: the target copy is removed only while the source one runs.
//
// controller.go dispatches on the phase; phases.go moves a migration forward,
// rollback.go backward; job.go owns the hypervisor calls in flight.
package livemigration

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/migration"
	"github.com/novacron/operator/operator/conflict"
	"github.com/novacron/operator/operator/launcher"
	"github.com/novacron/operator/operator/metrics"
	"github.com/novacron/operator/operator/provider"
)

// Finalizer lets a deleted migration be aborted and rolled back first.
const Finalizer = "novacron.io/migration"

// TargetPreparer makes a VM's disks on a target node (domain.Builder).
type TargetPreparer interface {
	PrepareTarget(ctx context.Context, v *novacronv1.VirtualMachine, devices novacronv1.DeviceAssignment, hvObj *novacronv1.Hypervisor, hv provider.Hypervisor) error
}

// Reconciler runs migrations.
type Reconciler struct {
	Client      client.Client
	APIReader   client.Reader
	Recorder    events.EventRecorder
	Hypervisors provider.Connector
	Targets     TargetPreparer
	Launcher    launcher.Config
	// Limits bound the migrations under way (unset ones take defaults).
	Limits migration.Limits
	// TimeoutPerGiB of guest memory bounds a migration (at least MinTimeout).
	TimeoutPerGiB, MinTimeout time.Duration
	// Poll is how often a running migration's progress is read.
	Poll time.Duration

	jobs *jobs
	// slots is held from a migration's check of the limits to the write of
	// its claim (Scheduling): two reconciles at once must not both take the
	// last slot.
	slots sync.Mutex
}

// +kubebuilder:rbac:groups=novacron.io,resources=virtualmachinemigrations,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=novacron.io,resources=virtualmachinemigrations/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=novacron.io,resources=virtualmachinemigrations/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;create;delete

// SetupWithManager registers the controller.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.setDefaults()
	return ctrl.NewControllerManagedBy(mgr).
		Named("virtualmachinemigration").
		For(&novacronv1.VirtualMachineMigration{}).
		// A target pod's binding, and a migration call's return, move a
		// migration on at once rather than at the next poll.
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			if name := o.GetLabels()[novacronv1.LabelMigration]; name != "" {
				return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
			}
			return nil
		})).
		WatchesRawSource(source.Channel(r.jobs.done, &handler.TypedEnqueueRequestForObject[*novacronv1.VirtualMachineMigration]{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: 2}).
		Complete(conflict.Retry(metrics.Instrument("virtualmachinemigration", r)))
}

func (r *Reconciler) setDefaults() {
	r.Limits = r.Limits.WithDefaults()
	if r.TimeoutPerGiB == 0 {
		r.TimeoutPerGiB = time.Minute
	}
	if r.MinTimeout == 0 {
		r.MinTimeout = 2 * time.Minute
	}
	if r.Poll == 0 {
		r.Poll = time.Second
	}
	if r.jobs == nil {
		r.jobs = newJobs()
	}
}

// Reconcile moves a migration one step; it never waits for the migration
// itself, which runs in the background and is polled.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	m := &novacronv1.VirtualMachineMigration{}
	if err := r.APIReader.Get(ctx, req.NamespacedName, m); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !m.DeletionTimestamp.IsZero() {
		if !m.Status.Phase.Done() && m.Status.Phase != "" {
			if res, err := r.rollback(ctx, m, novacronv1.MigrationCancelled, novacronv1.ReasonDeleted, "the migration was deleted"); err != nil || res.RequeueAfter > 0 {
				return res, err
			}
		}
		controllerutil.RemoveFinalizer(m, Finalizer)
		return ctrl.Result{}, client.IgnoreNotFound(r.Client.Update(ctx, m))
	}
	if m.Status.Phase.Done() {
		return r.afterDone(ctx, m)
	}
	if !controllerutil.ContainsFinalizer(m, Finalizer) {
		controllerutil.AddFinalizer(m, Finalizer)
		return ctrl.Result{}, r.Client.Update(ctx, m)
	}
	if m.Spec.Cancel {
		return r.rollback(ctx, m, novacronv1.MigrationCancelled, novacronv1.ReasonCancelled, "cancelled by spec.cancel")
	}

	v := &novacronv1.VirtualMachine{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: m.Spec.VMName}, v); err != nil {
		if apierrors.IsNotFound(err) {
			return r.rollback(ctx, m, novacronv1.MigrationFailed, novacronv1.ReasonVMNotFound, fmt.Sprintf("VirtualMachine %s does not exist", m.Spec.VMName))
		}
		return ctrl.Result{}, err
	}

	switch m.Status.Phase {
	case "", novacronv1.MigrationPending:
		return r.begin(ctx, m, v)
	case novacronv1.MigrationScheduling:
		return r.schedule(ctx, m, v)
	case novacronv1.MigrationTargetReady:
		return r.start(ctx, m, v)
	case novacronv1.MigrationRunning:
		return r.follow(ctx, m, v)
	}
	return ctrl.Result{}, nil
}

// afterDone finishes what a migration that ended still owes: a succeeded
// one's source disks.
func (r *Reconciler) afterDone(ctx context.Context, m *novacronv1.VirtualMachineMigration) (ctrl.Result, error) {
	c := meta.FindStatusCondition(m.Status.Conditions, novacronv1.MigrationConditionSourceCleaned)
	if c == nil || c.Status != metav1.ConditionFalse {
		return ctrl.Result{}, nil
	}
	v := &novacronv1.VirtualMachine{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: m.Spec.VMName}, v); err != nil {
		if !apierrors.IsNotFound(err) {
			return ctrl.Result{}, err
		}
		// Deleted since: the volumes are named after it all the same.
		v = &novacronv1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Namespace: m.Namespace, Name: m.Spec.VMName}}
	}
	return r.cleanSource(ctx, m, v)
}

// setVMState writes the VM's migration state (nil: the migration gives the VM
// back where it was). Only the fields named are written, and only over the
// version read.
func (r *Reconciler) setVMState(ctx context.Context, v *novacronv1.VirtualMachine, st *novacronv1.MigrationState) error {
	return r.patchVM(ctx, v, func() {
		v.Status.MigrationState = st
		if st != nil {
			v.Status.Phase = novacronv1.VMMigrating
		} else {
			v.Status.Phase = novacronv1.VMRunning
		}
	})
}

// handOver gives the VM to the migration's target: its node, and the target
// pod as its launcher pod (with that pod's recorded UID).
func (r *Reconciler) handOver(ctx context.Context, v *novacronv1.VirtualMachine, m *novacronv1.VirtualMachineMigration) error {
	return r.patchVM(ctx, v, func() {
		v.Status.MigrationState = nil
		v.Status.Phase = novacronv1.VMRunning
		v.Status.NodeName = m.Status.TargetNode
		v.Status.LauncherPod, v.Status.LauncherPodUID = m.Status.TargetPod, m.Status.TargetPodUID
	})
}

func (r *Reconciler) patchVM(ctx context.Context, v *novacronv1.VirtualMachine, change func()) error {
	orig := v.DeepCopy()
	change()
	return r.Client.Status().Patch(ctx, v, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
}

// wait holds the migration Pending, saying why.
func (r *Reconciler) wait(ctx context.Context, m *novacronv1.VirtualMachineMigration, why string) (ctrl.Result, error) {
	r.setPhase(ctx, m, novacronv1.MigrationPending)
	if setCondition(m, metav1.ConditionFalse, novacronv1.ReasonWaiting, "waiting: "+why) {
		return ctrl.Result{RequeueAfter: r.Poll}, r.Client.Status().Update(ctx, m)
	}
	return ctrl.Result{RequeueAfter: r.Poll}, nil
}

// finish ends the migration with its outcome.
func (r *Reconciler) finish(ctx context.Context, m *novacronv1.VirtualMachineMigration, v *novacronv1.VirtualMachine, phase novacronv1.MigrationPhase, reason, msg string) (ctrl.Result, error) {
	now := metav1.Now()
	r.setPhase(ctx, m, phase)
	m.Status.CompletionTime = &now
	m.Status.ObservedGeneration = m.Generation
	status := metav1.ConditionFalse
	if phase == novacronv1.MigrationSucceeded {
		status = metav1.ConditionTrue
	}
	setCondition(m, status, reason, msg)
	if err := r.Client.Status().Update(ctx, m); err != nil {
		return ctrl.Result{}, err
	}
	metrics.MigrationFinished(string(phase), m.Status.StartTime, m.Status.Progress)
	typ := corev1.EventTypeNormal
	if phase != novacronv1.MigrationSucceeded {
		typ = corev1.EventTypeWarning
	}
	r.Recorder.Eventf(m, nil, typ, reason, novacronv1.ActionMigrate, "%s", msg)
	if v != nil {
		r.Recorder.Eventf(v, m, typ, "Migration"+string(phase), novacronv1.ActionMigrate, "migration %s: %s", m.Name, msg)
	}
	return ctrl.Result{}, nil
}

// setPhase changes the migration's phase and logs the change.
func (r *Reconciler) setPhase(ctx context.Context, m *novacronv1.VirtualMachineMigration, p novacronv1.MigrationPhase) {
	if m.Status.Phase != p {
		log.FromContext(ctx).Info("migration phase", "from", m.Status.Phase, "to", p, "vm", m.Spec.VMName,
			"source", m.Status.SourceNode, "target", m.Status.TargetNode)
	}
	m.Status.Phase = p
}

func setCondition(m *novacronv1.VirtualMachineMigration, status metav1.ConditionStatus, reason, msg string) bool {
	return meta.SetStatusCondition(&m.Status.Conditions, metav1.Condition{Type: novacronv1.ConditionReady, Status: status, Reason: reason, Message: msg, ObservedGeneration: m.Generation})
}
