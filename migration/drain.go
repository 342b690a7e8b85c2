package migration

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
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/metrics"
	"github.com/novacron/operator/operator/vm"
)

// LabelDrain marks the migrations a drain made with the node they leave.
const LabelDrain = "novacron.io/drain"

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
	// Resync is how often a draining node is looked at again.
	Resync time.Duration
}

// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=novacron.io,resources=hypervisors/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=novacron.io,resources=virtualmachinemigrations,verbs=create

// SetupWithManager registers the controller. It relies on the VM controller's
// vm.NodeNameIndex.
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
		Complete(metrics.Instrument("drain", r))
}

// draining says why the node is being drained, or "".
func draining(n *corev1.Node) string {
	for _, t := range n.Spec.Taints {
		if t.Key == novacronv1.TaintMaintenance {
			return "Maintenance"
		}
	}
	if n.Spec.Unschedulable {
		return "Cordoned"
	}
	return ""
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
		reason = draining(node)
	} else if !apierrors.IsNotFound(err) {
		return ctrl.Result{}, err
	}
	var vms novacronv1.VirtualMachineList
	if err := r.Client.List(ctx, &vms, client.MatchingFields{vm.NodeNameIndex: hv.Name}); err != nil {
		return ctrl.Result{}, err
	}
	sort.Slice(vms.Items, func(i, j int) bool { return key(&vms.Items[i]) < key(&vms.Items[j]) })
	var migs novacronv1.VirtualMachineMigrationList
	if err := r.Client.List(ctx, &migs); err != nil {
		return ctrl.Result{}, err
	}
	active := map[string]string{} // namespace/vm -> migration
	for _, m := range migs.Items {
		if !m.Status.Phase.Done() {
			active[m.Namespace+"/"+m.Spec.VMName] = m.Name
		}
	}

	res := ctrl.Result{}
	hv.Status.Evacuation = nil
	if reason != "" {
		ev := &novacronv1.Evacuation{Reason: reason}
		for i := range vms.Items {
			v := &vms.Items[i]
			if _, ok := active[key(v)]; ok {
				ev.Migrating = append(ev.Migrating, key(v))
				continue
			}
			why, err := r.blocker(ctx, v, hv.Name)
			if err != nil {
				return ctrl.Result{}, err
			}
			if why != "" {
				ev.Blocked = append(ev.Blocked, novacronv1.EvacuationEntry{VM: key(v), Blocker: why})
				continue
			}
			if err := r.migrate(ctx, v, hv.Name); err != nil {
				return ctrl.Result{}, err
			}
			ev.Migrating = append(ev.Migrating, key(v))
		}
		hv.Status.Evacuation = ev
		res.RequeueAfter = r.Resync
		r.reportBlocked(hv, orig.Status.Evacuation, ev)
	}

	if want := hv.Annotations[novacronv1.AnnotationEvacuationPlan]; want != "" && (hv.Status.EvacuationPlan == nil || hv.Status.EvacuationPlan.Request != want) {
		plan, err := r.plan(ctx, hv, vms.Items)
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

func key(v *novacronv1.VirtualMachine) string { return v.Namespace + "/" + v.Name }

// blocker says why the VM cannot leave the node, or "". A drain migration
// that failed is a blocker too: the drain does not retry it blindly.
func (r *DrainReconciler) blocker(ctx context.Context, v *novacronv1.VirtualMachine, node string) (string, error) {
	snaps, err := SnapshotsOf(ctx, r.Client, v)
	if err != nil {
		return "", err
	}
	if why := Blockers(v, snaps); len(why) > 0 {
		return why[0], nil
	}
	m := &novacronv1.VirtualMachineMigration{}
	err = r.Client.Get(ctx, client.ObjectKey{Namespace: v.Namespace, Name: drainMigrationName(v, node)}, m)
	if err == nil && m.Status.Phase == novacronv1.MigrationFailed {
		msg := ""
		if c := meta.FindStatusCondition(m.Status.Conditions, ConditionReady); c != nil {
			msg = c.Message
		}
		return fmt.Sprintf("its drain migration %s failed (%s); delete it to try again", m.Name, msg), nil
	}
	return "", client.IgnoreNotFound(err)
}

func drainMigrationName(v *novacronv1.VirtualMachine, node string) string {
	return fmt.Sprintf("%s-drain-%s", v.Name, node)
}

// migrate makes the VM's drain migration unless it exists.
func (r *DrainReconciler) migrate(ctx context.Context, v *novacronv1.VirtualMachine, node string) error {
	m := &novacronv1.VirtualMachineMigration{
		ObjectMeta: metav1.ObjectMeta{Name: drainMigrationName(v, node), Namespace: v.Namespace, Labels: map[string]string{LabelDrain: node}},
		Spec:       novacronv1.VirtualMachineMigrationSpec{VMName: v.Name, Reason: novacronv1.MigrationDrain},
	}
	err := r.Client.Create(ctx, m)
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("creating drain migration %s/%s: %w", m.Namespace, m.Name, err)
	}
	r.Recorder.Eventf(v, m, corev1.EventTypeNormal, "Evacuating", "Drain", "node %s is being drained; migrating the VM off it", node)
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
			r.Recorder.Eventf(hv, nil, corev1.EventTypeWarning, "EvacuationBlocked", "Drain", "%s cannot leave the node: %s", b.VM, b.Blocker)
		}
	}
}

// capacity is what a candidate node has left, in vCPUs and bytes, with its
// overcommit.
type capacity struct {
	name     string
	cpuModel string
	cpu, mem float64
}

// plan estimates where each VM would go: the candidate with the most free
// vCPUs that fits it and has the same CPU model, taking the VMs placed so far
// into account. The scheduler makes the real choice when a VM moves.
func (r *DrainReconciler) plan(ctx context.Context, hv *novacronv1.Hypervisor, onNode []novacronv1.VirtualMachine) (*novacronv1.EvacuationPlan, error) {
	var hvs novacronv1.HypervisorList
	if err := r.Client.List(ctx, &hvs); err != nil {
		return nil, err
	}
	var all novacronv1.VirtualMachineList
	if err := r.Client.List(ctx, &all); err != nil {
		return nil, err
	}
	used := map[string][2]float64{}
	for _, v := range all.Items {
		if n := v.Status.NodeName; n != "" {
			u := used[n]
			used[n] = [2]float64{u[0] + float64(v.Spec.Template.Spec.Resources.CPU), u[1] + float64(v.Spec.Template.Spec.Resources.Memory.Value())}
		}
	}
	var cands []*capacity
	for i := range hvs.Items {
		h := &hvs.Items[i]
		if h.Name == hv.Name {
			continue
		}
		node := &corev1.Node{}
		if err := r.Client.Get(ctx, client.ObjectKey{Name: h.Name}, node); err != nil || draining(node) != "" {
			continue
		}
		capCPU, capMem := h.VMCapacity()
		cands = append(cands, &capacity{name: h.Name, cpuModel: h.Status.CPUModel,
			cpu: float64(capCPU) - used[h.Name][0], mem: float64(capMem) - used[h.Name][1]})
	}
	plan := &novacronv1.EvacuationPlan{PlannedAt: metav1.Now()}
	for i := range onNode {
		v := &onNode[i]
		entry := novacronv1.EvacuationEntry{VM: key(v)}
		snaps, err := SnapshotsOf(ctx, r.Client, v)
		if err != nil {
			return nil, err
		}
		if why := Blockers(v, snaps); len(why) > 0 {
			entry.Blocker = why[0]
			plan.VMs = append(plan.VMs, entry)
			continue
		}
		cpu, mem := float64(v.Spec.Template.Spec.Resources.CPU), float64(v.Spec.Template.Spec.Resources.Memory.Value())
		var best *capacity
		for _, c := range cands {
			if c.cpuModel != hv.Status.CPUModel || c.cpu < cpu || c.mem < mem {
				continue
			}
			if best == nil || c.cpu > best.cpu {
				best = c
			}
		}
		if best == nil {
			entry.Blocker = fmt.Sprintf("no other node with CPU model %q has %d vCPUs and %s free", hv.Status.CPUModel, v.Spec.Template.Spec.Resources.CPU, v.Spec.Template.Spec.Resources.Memory.String())
		} else {
			entry.Target = best.name
			best.cpu -= cpu
			best.mem -= mem
		}
		plan.VMs = append(plan.VMs, entry)
	}
	return plan, nil
}
