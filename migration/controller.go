// Package migration runs VirtualMachineMigrations: a target launcher pod placed
// by novacron-scheduler, then a libvirt peer-to-peer live migration from the
// VM's node to the target's, with progress, cancel, limits and rollback.
//
// Every phase is recorded on the migration before its side effect, and the VM
// carries status.migrationState while it moves, so the VM controller leaves
// its domain alone. An operator restarted in the middle looks at both
// hypervisors: a guest already running on the target is finished there; one
// still on the source is rolled back there. A domain is never left active on
// both: the target copy is removed only while the source one runs.
package migration

import (
	"context"
	"errors"
	"fmt"
	"strings"
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
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/hypervisors"
	"github.com/novacron/operator/operator/metrics"
	"github.com/novacron/operator/operator/provider"
	"github.com/novacron/operator/operator/vm"
)

// Finalizer lets a deleted migration be aborted and rolled back first.
const Finalizer = "novacron.io/migration"

// LabelMigration names the migration a target launcher pod belongs to.
const LabelMigration = "novacron.io/migration"

// ConditionReady is the migration's summary condition.
const ConditionReady = "Ready"

// TargetPreparer makes a VM's disks on a target node (the VM controller).
type TargetPreparer interface {
	PrepareTarget(ctx context.Context, v *novacronv1.VirtualMachine, pod *corev1.Pod, hvObj *novacronv1.Hypervisor, hv provider.Hypervisor) error
}

// Reconciler runs migrations.
type Reconciler struct {
	Client      client.Client
	APIReader   client.Reader
	Recorder    events.EventRecorder
	Hypervisors provider.Connector
	Targets     TargetPreparer
	Launcher    vm.LauncherConfig
	// MaxParallel bounds migrations under way in the cluster, and
	// MaxOutboundPerNode those leaving one node.
	MaxParallel, MaxOutboundPerNode int
	// TimeoutPerGiB of guest memory bounds a migration (at least MinTimeout).
	TimeoutPerGiB, MinTimeout time.Duration
	// Poll is how often a running migration's progress is read.
	Poll time.Duration

	mu       sync.Mutex
	jobs     map[types.UID]*job
	finished chan event.TypedGenericEvent[*novacronv1.VirtualMachineMigration]
}

// job is a migration call in flight.
type job struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
	// why, when set before cancel, is the failure to report instead of a
	// cancellation.
	why error
}

// +kubebuilder:rbac:groups=novacron.io,resources=virtualmachinemigrations,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=novacron.io,resources=virtualmachinemigrations/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=novacron.io,resources=virtualmachinemigrations/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;create;delete;patch;update

// SetupWithManager registers the controller.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.MaxParallel == 0 {
		r.MaxParallel = 4
	}
	if r.MaxOutboundPerNode == 0 {
		r.MaxOutboundPerNode = 2
	}
	if r.TimeoutPerGiB == 0 {
		r.TimeoutPerGiB = time.Minute
	}
	if r.MinTimeout == 0 {
		r.MinTimeout = 2 * time.Minute
	}
	if r.Poll == 0 {
		r.Poll = time.Second
	}
	r.jobs = map[types.UID]*job{}
	r.finished = make(chan event.TypedGenericEvent[*novacronv1.VirtualMachineMigration], 16)
	return ctrl.NewControllerManagedBy(mgr).
		Named("virtualmachinemigration").
		For(&novacronv1.VirtualMachineMigration{}).
		// A target pod's binding, and a migration call's return, move a
		// migration on at once rather than at the next poll.
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			if name := o.GetLabels()[LabelMigration]; name != "" {
				return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
			}
			return nil
		})).
		WatchesRawSource(source.Channel(r.finished, &handler.TypedEnqueueRequestForObject[*novacronv1.VirtualMachineMigration]{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: 2}).
		Complete(metrics.Instrument("virtualmachinemigration", r))
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
			if res, err := r.rollback(ctx, m, novacronv1.MigrationCancelled, "Deleted", "the migration was deleted"); err != nil || res.RequeueAfter > 0 {
				return res, err
			}
		}
		controllerutil.RemoveFinalizer(m, Finalizer)
		return ctrl.Result{}, client.IgnoreNotFound(r.Client.Update(ctx, m))
	}
	if m.Status.Phase.Done() {
		if c := meta.FindStatusCondition(m.Status.Conditions, ConditionSourceCleaned); c != nil && c.Status == metav1.ConditionFalse {
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
		return ctrl.Result{}, nil
	}
	if !controllerutil.ContainsFinalizer(m, Finalizer) {
		controllerutil.AddFinalizer(m, Finalizer)
		return ctrl.Result{}, r.Client.Update(ctx, m)
	}
	if m.Spec.Cancel {
		return r.rollback(ctx, m, novacronv1.MigrationCancelled, "Cancelled", "cancelled by spec.cancel")
	}

	v := &novacronv1.VirtualMachine{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: m.Spec.VMName}, v); err != nil {
		if apierrors.IsNotFound(err) {
			return r.rollback(ctx, m, novacronv1.MigrationFailed, "VMNotFound", fmt.Sprintf("VirtualMachine %s does not exist", m.Spec.VMName))
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

// begin checks the VM can move and the limits allow it, then claims the VM.
func (r *Reconciler) begin(ctx context.Context, m *novacronv1.VirtualMachineMigration, v *novacronv1.VirtualMachine) (ctrl.Result, error) {
	if st := v.Status.MigrationState; st != nil && st.MigrationName != m.Name {
		return r.wait(ctx, m, fmt.Sprintf("migration %s of VirtualMachine %s is under way", st.MigrationName, v.Name))
	}
	snaps, err := SnapshotsOf(ctx, r.Client, v)
	if err != nil {
		return ctrl.Result{}, err
	}
	if why := Blockers(v, snaps); len(why) > 0 {
		return r.finish(ctx, m, nil, novacronv1.MigrationFailed, "NotMigratable", strings.Join(why, "; "))
	}
	if why, err := r.overLimits(ctx, m, v.Status.NodeName); err != nil || why != "" {
		if err != nil {
			return ctrl.Result{}, err
		}
		return r.wait(ctx, m, why)
	}
	m.Status.Phase = novacronv1.MigrationScheduling
	m.Status.SourceNode = v.Status.NodeName
	m.Status.TargetPod = fmt.Sprintf("%s-migration-%s", v.Name, string(m.UID)[:8])
	m.Status.ObservedGeneration = m.Generation
	setCondition(m, metav1.ConditionFalse, "Scheduling", "waiting for novacron-scheduler to place the target pod "+m.Status.TargetPod)
	if err := r.Client.Status().Update(ctx, m); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.setVMState(ctx, v, &novacronv1.MigrationState{MigrationName: m.Name, SourceNode: m.Status.SourceNode, Phase: m.Status.Phase}, ""); err != nil {
		return ctrl.Result{}, err
	}
	r.Recorder.Eventf(m, nil, corev1.EventTypeNormal, "Scheduling", "Migrate", "moving VirtualMachine %s off node %s", v.Name, m.Status.SourceNode)
	return r.schedule(ctx, m, v)
}

// SnapshotsOf names the VM's snapshots.
func SnapshotsOf(ctx context.Context, c client.Reader, v *novacronv1.VirtualMachine) ([]string, error) {
	var list novacronv1.VirtualMachineSnapshotList
	if err := c.List(ctx, &list, client.InNamespace(v.Namespace)); err != nil {
		return nil, err
	}
	var names []string
	for _, s := range list.Items {
		if s.Spec.VMName == v.Name {
			names = append(names, s.Name)
		}
	}
	return names, nil
}

// overLimits says why the migration must wait for others, or "".
func (r *Reconciler) overLimits(ctx context.Context, m *novacronv1.VirtualMachineMigration, source string) (string, error) {
	var all novacronv1.VirtualMachineMigrationList
	if err := r.APIReader.List(ctx, &all); err != nil {
		return "", err
	}
	active, outbound := 0, 0
	for _, o := range all.Items {
		if o.UID == m.UID || o.Status.Phase == "" || o.Status.Phase == novacronv1.MigrationPending || o.Status.Phase.Done() {
			continue
		}
		active++
		if o.Status.SourceNode == source {
			outbound++
		}
	}
	switch {
	case active >= r.MaxParallel:
		return fmt.Sprintf("%d migrations are under way, the cluster's limit", active), nil
	case outbound >= r.MaxOutboundPerNode:
		return fmt.Sprintf("%d migrations are leaving node %s, its limit", outbound, source), nil
	}
	return "", nil
}

// schedule makes the target pod and waits for the scheduler to bind it.
func (r *Reconciler) schedule(ctx context.Context, m *novacronv1.VirtualMachineMigration, v *novacronv1.VirtualMachine) (ctrl.Result, error) {
	pod := &corev1.Pod{}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: m.Status.TargetPod}, pod)
	if apierrors.IsNotFound(err) {
		pod = targetPod(v, m, r.Launcher)
		if err := r.Client.Create(ctx, pod); err != nil && !apierrors.IsAlreadyExists(err) {
			return ctrl.Result{}, fmt.Errorf("creating target pod %s: %w", pod.Name, err)
		}
		return ctrl.Result{RequeueAfter: r.Poll}, nil
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	if pod.Spec.NodeName == "" {
		msg := "waiting for novacron-scheduler to place the target pod " + pod.Name
		for _, c := range pod.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Message != "" {
				msg = "no target yet: " + c.Message
			}
		}
		if setCondition(m, metav1.ConditionFalse, "Scheduling", msg) {
			return ctrl.Result{RequeueAfter: r.Poll}, r.Client.Status().Update(ctx, m)
		}
		return ctrl.Result{RequeueAfter: r.Poll}, nil
	}
	m.Status.TargetNode = pod.Spec.NodeName
	m.Status.Phase = novacronv1.MigrationTargetReady
	setCondition(m, metav1.ConditionFalse, "TargetReady", "target pod placed on node "+pod.Spec.NodeName)
	if err := r.Client.Status().Update(ctx, m); err != nil {
		return ctrl.Result{}, err
	}
	r.Recorder.Eventf(m, nil, corev1.EventTypeNormal, "TargetReady", "Migrate", "target node %s", pod.Spec.NodeName)
	return r.start(ctx, m, v)
}

// targetPod is the VM's launcher pod for the target node: the VM's own
// requests and placement, marked so the scheduler never picks the source
// node, narrowed by the migration's target node or selector.
func targetPod(v *novacronv1.VirtualMachine, m *novacronv1.VirtualMachineMigration, cfg vm.LauncherConfig) *corev1.Pod {
	pod := vm.BuildLauncherPod(v, cfg, nil)
	pod.Name = m.Status.TargetPod
	pod.Labels[novacronv1.LabelMigrationSource] = m.Status.SourceNode
	pod.Labels[LabelMigration] = m.Name
	// The VM's own pod is pinned to its node; this one goes elsewhere.
	pod.Spec.Affinity = v.Spec.Template.Spec.Affinity.DeepCopy()
	if pod.Spec.NodeSelector == nil {
		pod.Spec.NodeSelector = map[string]string{}
	}
	for k, val := range m.Spec.NodeSelector {
		pod.Spec.NodeSelector[k] = val
	}
	if m.Spec.TargetNodeName != "" {
		vm.PinToNode(pod, m.Spec.TargetNodeName)
	}
	return pod
}

// start makes the VM's disks on the target and starts the migration call.
func (r *Reconciler) start(ctx context.Context, m *novacronv1.VirtualMachineMigration, v *novacronv1.VirtualMachine) (ctrl.Result, error) {
	pod := &corev1.Pod{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: m.Status.TargetPod}, pod); err != nil {
		if apierrors.IsNotFound(err) {
			return r.rollback(ctx, m, novacronv1.MigrationFailed, "TargetPodGone", "the target pod "+m.Status.TargetPod+" was deleted")
		}
		return ctrl.Result{}, err
	}
	tgtObj, tgt, err := hypervisors.ForNode(ctx, r.Client, r.Hypervisors, m.Status.TargetNode)
	if err != nil {
		return ctrl.Result{}, err
	}
	if err := r.Targets.PrepareTarget(ctx, v, pod, tgtObj, tgt); err != nil {
		return r.rollback(ctx, m, novacronv1.MigrationFailed, "TargetNotReady", fmt.Sprintf("preparing node %s: %v", m.Status.TargetNode, err))
	}
	_, src, err := hypervisors.ForNode(ctx, r.Client, r.Hypervisors, m.Status.SourceNode)
	if err != nil {
		return ctrl.Result{}, err
	}
	opts, err := migrateOptions(v, tgtObj)
	if err != nil {
		return r.rollback(ctx, m, novacronv1.MigrationFailed, "InvalidPolicy", err.Error())
	}
	// Recorded before the call: a restarted operator then knows to look at
	// both nodes.
	now := metav1.Now()
	m.Status.Phase = novacronv1.MigrationRunning
	m.Status.StartTime = &now
	setCondition(m, metav1.ConditionFalse, "Running", fmt.Sprintf("migrating live from node %s to node %s", m.Status.SourceNode, m.Status.TargetNode))
	if err := r.Client.Status().Update(ctx, m); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.setVMState(ctx, v, &novacronv1.MigrationState{MigrationName: m.Name, SourceNode: m.Status.SourceNode, TargetNode: m.Status.TargetNode, Phase: m.Status.Phase}, ""); err != nil {
		return ctrl.Result{}, err
	}

	mem := v.Spec.Template.Spec.Resources.Memory.Value()
	timeout := max(r.MinTimeout, time.Duration(float64(r.TimeoutPerGiB)*float64(mem)/float64(1<<30)))
	jobCtx, cancel := context.WithTimeout(context.Background(), timeout)
	j := &job{cancel: cancel, done: make(chan struct{})}
	r.mu.Lock()
	r.jobs[m.UID] = j
	r.mu.Unlock()
	domain := vm.DomainName(v)
	done := m.DeepCopy()
	go func() {
		defer func() {
			close(j.done)
			select { // a full channel (or a stopped controller) leaves it to the poll
			case r.finished <- event.TypedGenericEvent[*novacronv1.VirtualMachineMigration]{Object: done}:
			default:
			}
		}()
		defer cancel()
		j.err = src.Migrate(jobCtx, domain, opts)
		if jobCtx.Err() != nil {
			// Timed out or cancelled: the call returned but the job may
			// still run on the source; stop it there (rollback asks again).
			abortCtx, cancelAbort := context.WithTimeout(context.Background(), abortTimeout)
			_ = src.AbortMigration(abortCtx, domain)
			cancelAbort()
			switch {
			case errors.Is(jobCtx.Err(), context.DeadlineExceeded):
				j.err = fmt.Errorf("did not complete within %s (%s per GiB of memory); aborted", timeout, r.TimeoutPerGiB)
			case j.why != nil:
				j.err = j.why
			default:
				j.err = errCancelled
			}
		}
	}()
	metrics.MigrationStarted()
	r.Recorder.Eventf(m, nil, corev1.EventTypeNormal, "Migrating", "Migrate", "migrating live from node %s to node %s", m.Status.SourceNode, m.Status.TargetNode)
	return ctrl.Result{RequeueAfter: r.Poll}, nil
}

var errCancelled = errors.New("cancelled")

// abortTimeout bounds an abort: a source daemon stuck talking to a dead
// target must not hold the rollback, which looks at the domain's state next.
const abortTimeout = 5 * time.Second

// migrateOptions turns the VM's migration policy into libvirt's terms.
func migrateOptions(v *novacronv1.VirtualMachine, tgt *novacronv1.Hypervisor) (provider.MigrateOptions, error) {
	o := provider.MigrateOptions{DestURI: tgt.Spec.MigrationURI, CopyStorage: true, AutoConverge: true}
	if o.DestURI == "" {
		o.DestURI = tgt.Spec.URI
	}
	if p := v.Spec.MigrationPolicy; p != nil {
		o.Compressed, o.Encrypted = p.Compression, p.Encrypted
		if p.Bandwidth != "" {
			bytesPerSecond, err := novacronv1.ParseBandwidth(p.Bandwidth)
			if err != nil {
				return o, fmt.Errorf("spec.migrationPolicy.bandwidth: %w", err)
			}
			// libvirt takes MiB/s.
			o.BandwidthMiBps = max(1, uint64(bytesPerSecond/(1<<20)))
		}
	}
	return o, nil
}

// follow reports a running migration's progress and finishes it when the call
// returns; with no call in flight (the operator restarted) it resolves the
// truth from both hypervisors.
func (r *Reconciler) follow(ctx context.Context, m *novacronv1.VirtualMachineMigration, v *novacronv1.VirtualMachine) (ctrl.Result, error) {
	r.mu.Lock()
	j := r.jobs[m.UID]
	r.mu.Unlock()
	domain := vm.DomainName(v)
	if j == nil {
		return r.resolve(ctx, m, v)
	}
	select {
	case <-j.done:
	default:
		// A target that stops answering cannot finish the migration; libvirt
		// may take long to notice, so abort it now.
		if why := r.targetLost(ctx, m); why != nil {
			j.why = why
			j.cancel()
			<-j.done
			return r.follow(ctx, m, v)
		}
		_, src, err := hypervisors.ForNode(ctx, r.Client, r.Hypervisors, m.Status.SourceNode)
		if err == nil {
			if p, err := src.MigrationProgress(ctx, domain); err == nil && !p.Completed {
				m.Status.Progress = progress(p)
				if err := r.Client.Status().Update(ctx, m); err != nil {
					return ctrl.Result{}, err
				}
			}
		}
		return ctrl.Result{RequeueAfter: r.Poll}, nil
	}
	r.mu.Lock()
	delete(r.jobs, m.UID)
	r.mu.Unlock()
	if j.err != nil {
		phase, reason, msg := novacronv1.MigrationFailed, "MigrationFailed", j.err.Error()
		if errors.Is(j.err, errCancelled) {
			phase, reason = novacronv1.MigrationCancelled, "Cancelled"
		} else if j.why == nil {
			// The source's libvirtd may have noticed a lost target before our
			// probe did, and says only that its socket closed: name the node.
			if lost := r.targetLost(ctx, m); lost != nil {
				msg = fmt.Sprintf("%v (the source's libvirtd: %v)", lost, j.err)
			}
		}
		return r.rollback(ctx, m, phase, reason, msg)
	}
	return r.succeed(ctx, m, v)
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

// resolve finds where the VM runs after an operator restart mid-migration.
func (r *Reconciler) resolve(ctx context.Context, m *novacronv1.VirtualMachineMigration, v *novacronv1.VirtualMachine) (ctrl.Result, error) {
	domain := vm.DomainName(v)
	_, src, err := hypervisors.ForNode(ctx, r.Client, r.Hypervisors, m.Status.SourceNode)
	if err != nil {
		return ctrl.Result{}, err
	}
	if p, err := src.MigrationProgress(ctx, domain); err == nil && !p.Completed && p.DataTotal > 0 {
		// The source's daemon still drives it: let it finish or fail, and
		// look again.
		m.Status.Progress = progress(p)
		return ctrl.Result{RequeueAfter: r.Poll}, r.Client.Status().Update(ctx, m)
	}
	// rollback finishes the migration instead when the guest runs only on
	// the target.
	return r.rollback(ctx, m, novacronv1.MigrationFailed, "Interrupted", fmt.Sprintf("the operator restarted during the migration; the VM still runs on node %s, so it was rolled back", m.Status.SourceNode))
}

// state is the domain's state, "" when it is not there.
func state(ctx context.Context, hv provider.Hypervisor, domain string) (provider.DomainState, error) {
	st, err := hv.State(ctx, domain)
	if errors.Is(err, provider.ErrNotFound) {
		return "", nil
	}
	return st, err
}

func progress(p provider.MigrationProgress) *novacronv1.MigrationProgress {
	return &novacronv1.MigrationProgress{
		DataTotalBytes: p.DataTotal, DataProcessedBytes: p.DataProcessed, DataRemainingBytes: p.DataRemaining,
		DirtyRateBytesPerSecond: p.DirtyRate, Iterations: p.Iterations,
		ElapsedMilliseconds: p.Elapsed.Milliseconds(), DowntimeMilliseconds: p.Downtime.Milliseconds(),
	}
}

// succeed hands the VM over to the target: its node and launcher pod, then
// removes what it left on the source.
func (r *Reconciler) succeed(ctx context.Context, m *novacronv1.VirtualMachineMigration, v *novacronv1.VirtualMachine) (ctrl.Result, error) {
	domain := vm.DomainName(v)
	_, tgt, err := hypervisors.ForNode(ctx, r.Client, r.Hypervisors, m.Status.TargetNode)
	if err != nil {
		return ctrl.Result{}, err
	}
	if p, err := tgt.MigrationProgress(ctx, domain); err == nil && p.Completed {
		m.Status.Progress = progress(p)
	}
	oldPod := v.Status.LauncherPod
	if err := r.setVMState(ctx, v, nil, m.Status.TargetNode, m.Status.TargetPod); err != nil {
		return ctrl.Result{}, err
	}
	if oldPod != "" && oldPod != m.Status.TargetPod {
		if err := r.Client.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: m.Namespace, Name: oldPod}}); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, err
		}
	}
	msg := fmt.Sprintf("VirtualMachine %s now runs on node %s", v.Name, m.Status.TargetNode)
	if p := m.Status.Progress; p != nil {
		msg += fmt.Sprintf(" (downtime %d ms)", p.DowntimeMilliseconds)
	}
	// The source's stale disks go after the VM is handed over, recorded so
	// that a restart still removes them.
	meta.SetStatusCondition(&m.Status.Conditions, metav1.Condition{Type: ConditionSourceCleaned, Status: metav1.ConditionFalse,
		Reason: "Pending", Message: "the VM's old disks on node " + m.Status.SourceNode + " are to be removed", ObservedGeneration: m.Generation})
	res, err := r.finish(ctx, m, v, novacronv1.MigrationSucceeded, "Succeeded", msg)
	if err != nil {
		return res, err
	}
	return r.cleanSource(ctx, m, v)
}

// ConditionSourceCleaned is True once a succeeded migration removed the VM's
// disks from the node it left.
const ConditionSourceCleaned = "SourceCleaned"

// cleanSource removes what a succeeded migration left on the source: its
// disks, and the paused guest itself when libvirt could not confirm the
// switch-over there (the target lost on the way).
func (r *Reconciler) cleanSource(ctx context.Context, m *novacronv1.VirtualMachineMigration, v *novacronv1.VirtualMachine) (ctrl.Result, error) {
	srcObj, src, err := hypervisors.ForNode(ctx, r.Client, r.Hypervisors, m.Status.SourceNode)
	if err != nil {
		return ctrl.Result{}, err
	}
	if err := src.Undefine(ctx, vm.DomainName(v)); err != nil {
		return ctrl.Result{}, err
	}
	for _, vol := range vm.VolumeNames(v) {
		if err := src.DeleteVolume(ctx, hypervisors.Pool(srcObj), vol); err != nil {
			return ctrl.Result{}, err
		}
	}
	meta.SetStatusCondition(&m.Status.Conditions, metav1.Condition{Type: ConditionSourceCleaned, Status: metav1.ConditionTrue,
		Reason: "Removed", Message: "the VM's old disks on node " + m.Status.SourceNode + " were removed", ObservedGeneration: m.Generation})
	return ctrl.Result{}, r.Client.Status().Update(ctx, m)
}

// rollback aborts the migration and removes everything on the target, as long
// as the VM still runs on the source; a VM found running only on the target is
// finished there instead.
func (r *Reconciler) rollback(ctx context.Context, m *novacronv1.VirtualMachineMigration, phase novacronv1.MigrationPhase, reason, msg string) (ctrl.Result, error) {
	r.mu.Lock()
	j := r.jobs[m.UID]
	r.mu.Unlock()
	if j != nil {
		j.cancel()
		<-j.done
		r.mu.Lock()
		delete(r.jobs, m.UID)
		r.mu.Unlock()
	}
	v := &novacronv1.VirtualMachine{}
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: m.Spec.VMName}, v)
	if err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, err
	}
	vmExists := err == nil
	if vmExists && m.Status.TargetNode != "" && m.Status.Phase == novacronv1.MigrationRunning {
		domain := vm.DomainName(v)
		_, src, err := hypervisors.ForNode(ctx, r.Client, r.Hypervisors, m.Status.SourceNode)
		if err != nil {
			return ctrl.Result{}, err
		}
		abortCtx, cancelAbort := context.WithTimeout(ctx, abortTimeout)
		_ = src.AbortMigration(abortCtx, domain)
		cancelAbort()
		srcState, err := state(ctx, src, domain)
		if err != nil {
			return ctrl.Result{}, err
		}
		if srcState != provider.StateRunning {
			// A paused or missing source may mean the guest switched over, so
			// the target says where it runs; an unreachable one is waited for
			// rather than guessed.
			_, tgt, err := hypervisors.ForNode(ctx, r.Client, r.Hypervisors, m.Status.TargetNode)
			var tgtState provider.DomainState
			if err == nil {
				tgtState, err = state(ctx, tgt, domain)
			}
			if errors.Is(err, provider.ErrUnreachable) {
				where := "paused on node " + m.Status.SourceNode
				if srcState == "" {
					where = "gone from node " + m.Status.SourceNode
				}
				if setCondition(m, metav1.ConditionFalse, "WaitingForTarget", fmt.Sprintf("the guest is %s and node %s, which may already run it, cannot be reached; waiting for node %s", where, m.Status.TargetNode, m.Status.TargetNode)) {
					if err := r.Client.Status().Update(ctx, m); err != nil {
						return ctrl.Result{}, err
					}
				}
				return ctrl.Result{RequeueAfter: r.Poll}, nil
			}
			if err != nil {
				return ctrl.Result{}, err
			}
			if tgtState == provider.StateRunning {
				return r.succeed(ctx, m, v)
			}
		}
		if srcState == provider.StateRunning || srcState == provider.StatePaused {
			// The VM is safe on the source: take its unfinished copy off the
			// target. An unreachable target's libvirtd drops that copy (never
			// made persistent) when it is back; only its disks stay until then.
			err := r.clearTarget(ctx, m, v)
			if errors.Is(err, provider.ErrUnreachable) {
				msg += fmt.Sprintf("; node %s cannot be reached, so its unfinished copy is left to its libvirtd", m.Status.TargetNode)
			} else if err != nil {
				return ctrl.Result{}, err
			}
		}
	}
	if m.Status.TargetPod != "" {
		if err := r.Client.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: m.Namespace, Name: m.Status.TargetPod}}); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, err
		}
	}
	if !vmExists {
		v = nil
	}
	if v != nil && v.Status.MigrationState != nil && v.Status.MigrationState.MigrationName == m.Name {
		if err := r.setVMState(ctx, v, nil, ""); err != nil {
			return ctrl.Result{}, err
		}
	}
	return r.finish(ctx, m, v, phase, reason, msg)
}

// clearTarget removes the VM's domain and disks from the migration's target.
func (r *Reconciler) clearTarget(ctx context.Context, m *novacronv1.VirtualMachineMigration, v *novacronv1.VirtualMachine) error {
	tgtObj, tgt, err := hypervisors.ForNode(ctx, r.Client, r.Hypervisors, m.Status.TargetNode)
	if err != nil {
		return err
	}
	if err := tgt.Undefine(ctx, vm.DomainName(v)); err != nil {
		return err
	}
	for _, vol := range vm.VolumeNames(v) {
		if err := tgt.DeleteVolume(ctx, hypervisors.Pool(tgtObj), vol); err != nil {
			return err
		}
	}
	return nil
}

// setVMState writes the VM's migration state; a node (and launcher pod) hands
// the VM over to it. Only the fields named are written, and only over the
// version read.
func (r *Reconciler) setVMState(ctx context.Context, v *novacronv1.VirtualMachine, st *novacronv1.MigrationState, node string, pod ...string) error {
	orig := v.DeepCopy()
	v.Status.MigrationState = st
	if st != nil {
		v.Status.Phase = novacronv1.VMMigrating
	} else {
		v.Status.Phase = novacronv1.VMRunning
	}
	if node != "" {
		v.Status.NodeName = node
		v.Status.LauncherPod = pod[0]
	}
	return r.Client.Status().Patch(ctx, v, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
}

func (r *Reconciler) wait(ctx context.Context, m *novacronv1.VirtualMachineMigration, why string) (ctrl.Result, error) {
	m.Status.Phase = novacronv1.MigrationPending
	if setCondition(m, metav1.ConditionFalse, "Waiting", "waiting: "+why) {
		return ctrl.Result{RequeueAfter: r.Poll}, r.Client.Status().Update(ctx, m)
	}
	return ctrl.Result{RequeueAfter: r.Poll}, nil
}

// finish ends the migration with its outcome.
func (r *Reconciler) finish(ctx context.Context, m *novacronv1.VirtualMachineMigration, v *novacronv1.VirtualMachine, phase novacronv1.MigrationPhase, reason, msg string) (ctrl.Result, error) {
	now := metav1.Now()
	m.Status.Phase = phase
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
	r.Recorder.Eventf(m, nil, typ, reason, "Migrate", "%s", msg)
	if v != nil {
		r.Recorder.Eventf(v, m, typ, "Migration"+string(phase), "Migrate", "migration %s: %s", m.Name, msg)
	}
	return ctrl.Result{}, nil
}

func setCondition(m *novacronv1.VirtualMachineMigration, status metav1.ConditionStatus, reason, msg string) bool {
	return meta.SetStatusCondition(&m.Status.Conditions, metav1.Condition{Type: ConditionReady, Status: status, Reason: reason, Message: msg, ObservedGeneration: m.Generation})
}
