package livemigration

import (
	"context"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/migration"
	"github.com/novacron/operator/operator/conflict"
	"github.com/novacron/operator/operator/hypervisors"
	"github.com/novacron/operator/operator/launcher"
	"github.com/novacron/operator/operator/metrics"
)

// DrainReconciler evacuates nodes being drained: a cordoned Node, or one
// tainted node.novacron.io/maintenance, gets a VirtualMachineMigration (reason
// Drain) for every VM that can move live; the migration controller's limits
// pace them. VMs that cannot move are listed with why on the node's
// Hypervisor (status.evacuation) and in events. It also answers dry runs: the
// annotation novacron.io/evacuation-plan on a Hypervisor gets a plan in
// status.evacuationPlan.
type DrainReconciler struct {
	Client   client.Client
	Recorder events.EventRecorder
	// Launcher sizes the launcher pods a plan's targets must have room for.
	Launcher launcher.Config
	// Resync is how often a draining node is looked at again.
	Resync time.Duration
}

// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=novacron.io,resources=hypervisors/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=novacron.io,resources=virtualmachinemigrations,verbs=create

// SetupWithManager registers the controller. It relies on the manager's
// hypervisors.NodeNameIndex.
func (r *DrainReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Resync == 0 {
		r.Resync = 10 * time.Second
	}
	byName := func(name string) []reconcile.Request {
		if name == "" {
			return nil
		}
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: name}}}
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("drain").
		For(&novacronv1.Hypervisor{}).
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return byName(o.GetName())
		})).
		Watches(&novacronv1.VirtualMachineMigration{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return byName(o.(*novacronv1.VirtualMachineMigration).Status.SourceNode)
		})).
		Complete(conflict.Retry(metrics.Instrument("drain", r)))
}

// Reconcile drains the node if it is to be drained, and answers plan requests.
func (r *DrainReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	hv := &novacronv1.Hypervisor{}
	if err := r.Client.Get(ctx, req.NamespacedName, hv); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	orig := hv.DeepCopy()
	node := &corev1.Node{}
	reason := ""
	if err := r.Client.Get(ctx, req.NamespacedName, node); err == nil {
		reason = migration.Draining(node)
	} else if !apierrors.IsNotFound(err) {
		return ctrl.Result{}, err
	}
	onNode, err := hypervisors.VMsOn(ctx, r.Client, hv.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	sort.Slice(onNode, func(i, j int) bool { return key(&onNode[i]) < key(&onNode[j]) })
	snaps, err := snapshotsByVM(ctx, r.Client)
	if err != nil {
		return ctrl.Result{}, err
	}

	res := ctrl.Result{}
	hv.Status.Evacuation = nil
	if reason != "" {
		if hv.Status.Evacuation, err = r.evacuate(ctx, hv.Name, reason, onNode, snaps); err != nil {
			return ctrl.Result{}, err
		}
		res.RequeueAfter = r.Resync
		r.reportBlocked(hv, orig.Status.Evacuation, hv.Status.Evacuation)
	}
	if want := hv.Annotations[novacronv1.AnnotationEvacuationPlan]; want != "" && (hv.Status.EvacuationPlan == nil || hv.Status.EvacuationPlan.Request != want) {
		plan, err := r.plan(ctx, hv, onNode, snaps)
		if err != nil {
			return ctrl.Result{}, err
		}
		plan.Request = want
		hv.Status.EvacuationPlan = plan
	}
	if !equality.Semantic.DeepEqual(orig.Status, hv.Status) {
		if err := r.Client.Status().Patch(ctx, hv, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
			return ctrl.Result{}, err
		}
	}
	return res, nil
}

// evacuate makes a drain migration for every VM on the node that can move
// and is not moving yet, and reports the others.
func (r *DrainReconciler) evacuate(ctx context.Context, node, reason string, onNode []novacronv1.VirtualMachine, snaps map[string][]string) (*novacronv1.Evacuation, error) {
	var migs novacronv1.VirtualMachineMigrationList
	if err := r.Client.List(ctx, &migs); err != nil {
		return nil, err
	}
	active := map[string]string{} // namespace/vm -> migration
	for _, m := range migs.Items {
		if !m.Status.Phase.Done() {
			active[m.Namespace+"/"+m.Spec.VMName] = m.Name
		}
	}
	ev := &novacronv1.Evacuation{Reason: reason}
	for i := range onNode {
		v := &onNode[i]
		if _, ok := active[key(v)]; ok {
			ev.Migrating = append(ev.Migrating, key(v))
			continue
		}
		why, err := r.blocker(ctx, v, node, snaps)
		if err != nil {
			return nil, err
		}
		if why != "" {
			ev.Blocked = append(ev.Blocked, novacronv1.EvacuationEntry{VM: key(v), Blocker: why})
			continue
		}
		if err := r.migrate(ctx, v, node); err != nil {
			// One VM's refusal (a migration policy, its namespace's
			// deletion) must not hold the others on the node; the drain
			// tries it again on its next look.
			ev.Blocked = append(ev.Blocked, novacronv1.EvacuationEntry{VM: key(v), Blocker: err.Error()})
			continue
		}
		ev.Migrating = append(ev.Migrating, key(v))
	}
	return ev, nil
}

// blocker says why the VM cannot leave the node, or "". A drain migration
// that failed is a blocker too: the drain does not retry it blindly.
func (r *DrainReconciler) blocker(ctx context.Context, v *novacronv1.VirtualMachine, node string, snaps map[string][]string) (string, error) {
	if why := migration.Blockers(v, snaps[key(v)]); len(why) > 0 {
		return why[0], nil
	}
	m := &novacronv1.VirtualMachineMigration{}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: v.Namespace, Name: drainMigrationName(v, node)}, m)
	if err == nil && m.Status.Phase == novacronv1.MigrationFailed {
		msg := ""
		if c := meta.FindStatusCondition(m.Status.Conditions, novacronv1.ConditionReady); c != nil {
			msg = c.Message
		}
		return fmt.Sprintf("its drain migration %s failed (%s); delete it to try again", m.Name, msg), nil
	}
	return "", client.IgnoreNotFound(err)
}

func drainMigrationName(v *novacronv1.VirtualMachine, node string) string {
	return novacronv1.DerivedName(v.Name, "-drain-"+node, 253)
}

// migrate makes the VM's drain migration unless it exists.
func (r *DrainReconciler) migrate(ctx context.Context, v *novacronv1.VirtualMachine, node string) error {
	m := &novacronv1.VirtualMachineMigration{
		ObjectMeta: metav1.ObjectMeta{Name: drainMigrationName(v, node), Namespace: v.Namespace, Labels: map[string]string{novacronv1.LabelDrain: node}},
		Spec:       novacronv1.VirtualMachineMigrationSpec{VMName: v.Name, Reason: novacronv1.MigrationDrain},
	}
	err := r.Client.Create(ctx, m)
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("creating drain migration %s/%s: %w", m.Namespace, m.Name, err)
	}
	r.Recorder.Eventf(v, m, corev1.EventTypeNormal, novacronv1.ReasonEvacuating, novacronv1.ActionDrain, "node %s is being drained; migrating the VM off it", node)
	log.FromContext(ctx).Info("evacuating VM", "vm", key(v), "node", node, "migration", m.Name)
	return nil
}

// reportBlocked records an event on the Hypervisor for each VM newly blocked.
func (r *DrainReconciler) reportBlocked(hv *novacronv1.Hypervisor, before, now *novacronv1.Evacuation) {
	seen := map[string]string{}
	if before != nil {
		for _, b := range before.Blocked {
			seen[b.VM] = b.Blocker
		}
	}
	for _, b := range now.Blocked {
		if seen[b.VM] != b.Blocker {
			r.Recorder.Eventf(hv, nil, corev1.EventTypeWarning, novacronv1.ReasonEvacuationBlocked, novacronv1.ActionDrain, "%s cannot leave the node: %s", b.VM, b.Blocker)
		}
	}
}

// plan estimates where each VM on the node would go (migration.EstimateTargets
// on the capacity model the scheduler uses), or why it stays. The scheduler
// makes the real choice when a VM moves.
func (r *DrainReconciler) plan(ctx context.Context, hv *novacronv1.Hypervisor, onNode []novacronv1.VirtualMachine, snaps map[string][]string) (*novacronv1.EvacuationPlan, error) {
	var all novacronv1.VirtualMachineList
	if err := r.Client.List(ctx, &all); err != nil {
		return nil, err
	}
	size := func(v *novacronv1.VirtualMachine) migration.Resources { return footprint(v, r.Launcher, nil) }
	nodes, err := readNodes(ctx, r.Client, all.Items, size)
	if err != nil {
		return nil, err
	}
	from := migration.Node{Name: hv.Name, CPUModel: hv.Status.CPUModel}
	plan := &novacronv1.EvacuationPlan{PlannedAt: metav1.Now()}
	blocked := map[string]string{}
	var leaving []migration.VM
	for i := range onNode {
		v := &onNode[i]
		if why := migration.Blockers(v, snaps[key(v)]); len(why) > 0 {
			blocked[key(v)] = why[0]
			continue
		}
		leaving = append(leaving, migration.VM{Key: key(v), Node: hv.Name, Size: size(v), Movable: true})
	}
	targets := migration.EstimateTargets(from, nodes, leaving)
	for i := range onNode {
		v := &onNode[i]
		entry := novacronv1.EvacuationEntry{VM: key(v), Target: targets[key(v)], Blocker: blocked[key(v)]}
		if entry.Blocker == "" && entry.Target == "" {
			res := v.Spec.Template.Spec.Resources
			entry.Blocker = fmt.Sprintf("no other node with CPU model %q has %d vCPUs and %s free", hv.Status.CPUModel, res.CPU, res.Memory.String())
		}
		plan.VMs = append(plan.VMs, entry)
	}
	return plan, nil
}
