package livemigration

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/migration"
	"github.com/novacron/operator/operator/launcher"
	"github.com/novacron/operator/operator/usage"
	"github.com/novacron/operator/policies"
)

// PlanConfigMap is where a dry-running rebalancer writes its last plan, in
// the operator's namespace.
const PlanConfigMap = "novacron-rebalance-plan"

// Rebalancer periodically moves VMs off nodes loaded above a threshold
// (migration.Plan: fewest, cheapest moves, hysteresis, a budget per round).
// Every move is a VirtualMachineMigration with reason Rebalance and the
// planned target as its targetNodeName; migration policies can veto a move; a
// VM is not moved again within its cooldown; no round starts while the last
// round's migrations run. In dry-run mode it only writes the plan to the
// ConfigMap novacron-rebalance-plan.
type Rebalancer struct {
	Client    client.Client
	Policies  *policies.Engine
	Namespace string
	Interval  time.Duration
	Config    migration.RebalanceConfig
	Cooldown  time.Duration
	DryRun    bool
	// Launcher sizes the launcher pods the targets must have room for.
	Launcher launcher.Config
	// Measured weighs VMs by their measured use (domain stats, from Usage)
	// where the operator has it, instead of their requested size: a node full
	// of idle VMs is not hot.
	Measured bool
	Usage    *usage.Store
}

// +kubebuilder:rbac:groups="",namespace=novacron-system,resources=configmaps,verbs=create;patch

// NeedLeaderElection: only the leader moves VMs.
func (r *Rebalancer) NeedLeaderElection() bool { return true }

// Start runs a round every Interval until ctx ends.
func (r *Rebalancer) Start(ctx context.Context) error {
	t := time.NewTicker(r.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if _, err := r.Round(ctx); err != nil {
				log.FromContext(ctx).Error(err, "rebalance round")
			}
		}
	}
}

// Round plans and (unless dry-running) starts one round of moves.
func (r *Rebalancer) Round(ctx context.Context) ([]migration.Move, error) {
	var migs novacronv1.VirtualMachineMigrationList
	if err := r.Client.List(ctx, &migs); err != nil {
		return nil, err
	}
	busy := map[string]bool{}
	for _, m := range migs.Items {
		if !m.Status.Phase.Done() {
			if m.Spec.Reason == novacronv1.MigrationRebalance && !r.DryRun {
				return nil, nil // the last round is still moving
			}
			busy[m.Namespace+"/"+m.Spec.VMName] = true
		}
		if m.Spec.Reason == novacronv1.MigrationRebalance && m.Status.CompletionTime != nil && time.Since(m.Status.CompletionTime.Time) < r.Cooldown {
			busy[m.Namespace+"/"+m.Spec.VMName] = true
		}
	}
	nodes, vms, byKey, err := r.cluster(ctx, busy)
	if err != nil {
		return nil, err
	}
	var moves []migration.Move
	for _, mv := range migration.Plan(nodes, vms, r.Config) {
		v := byKey[mv.VM]
		if r.Policies != nil {
			denials, _, err := r.Policies.AllowMigration(ctx, policies.MigrationInput{VM: v, SourceNode: mv.From, TargetNode: mv.To, Reason: string(novacronv1.MigrationRebalance),
				Migration: &novacronv1.VirtualMachineMigration{Spec: novacronv1.VirtualMachineMigrationSpec{VMName: v.Name, TargetNodeName: mv.To, Reason: novacronv1.MigrationRebalance}}})
			if err != nil {
				return nil, err
			}
			if len(denials) > 0 {
				log.FromContext(ctx).Info("rebalance move vetoed by policy", "vm", mv.VM, "to", mv.To, "why", strings.Join(denials, "; "))
				continue
			}
		}
		moves = append(moves, mv)
	}
	if r.DryRun {
		return moves, r.writePlan(ctx, moves)
	}
	for _, mv := range moves {
		v := byKey[mv.VM]
		m := &novacronv1.VirtualMachineMigration{
			ObjectMeta: metav1.ObjectMeta{Namespace: v.Namespace, Name: novacronv1.DerivedName(v.Name, fmt.Sprintf("-rebalance-%d", time.Now().Unix()), 253)},
			Spec:       novacronv1.VirtualMachineMigrationSpec{VMName: v.Name, TargetNodeName: mv.To, Reason: novacronv1.MigrationRebalance},
		}
		if err := r.Client.Create(ctx, m); err != nil && !apierrors.IsAlreadyExists(err) {
			return moves, err
		}
		log.FromContext(ctx).Info("rebalancing VM", "vm", mv.VM, "from", mv.From, "to", mv.To, "migration", m.Name)
	}
	return moves, nil
}

// cluster reads nodes and VMs into the planner's terms: load by requested
// size (or measured use); VMs that cannot move now (blockers, busy,
// cooldown) are fixed.
func (r *Rebalancer) cluster(ctx context.Context, busy map[string]bool) ([]migration.Node, []migration.VM, map[string]*novacronv1.VirtualMachine, error) {
	var vmList novacronv1.VirtualMachineList
	if err := r.Client.List(ctx, &vmList); err != nil {
		return nil, nil, nil, err
	}
	nodes, err := readNodes(ctx, r.Client, vmList.Items, r.size)
	if err != nil {
		return nil, nil, nil, err
	}
	snaps, err := snapshotsByVM(ctx, r.Client)
	if err != nil {
		return nil, nil, nil, err
	}
	byKey := map[string]*novacronv1.VirtualMachine{}
	var vms []migration.VM
	for i := range vmList.Items {
		v := &vmList.Items[i]
		held := migration.HeldOn(v)
		if len(held) == 0 || held[0] != v.Status.NodeName {
			continue // not holding capacity where it is: nothing to unload
		}
		k := key(v)
		byKey[k] = v
		// The planner does not know the VM's own placement rules, so a VM
		// that has any stays: a move the scheduler could not honour would hold
		// the next rounds back.
		spec := v.Spec.Template.Spec
		placed := len(spec.NodeSelector) > 0 || spec.Affinity != nil
		vms = append(vms, migration.VM{Key: k, Node: v.Status.NodeName, Size: r.size(v),
			Movable: !busy[k] && !placed && len(migration.Blockers(v, snaps[k])) == 0})
	}
	return nodes, vms, byKey, nil
}

// size is what a VM weighs: its requested size, or its measured use when the
// rebalancer weighs by that and knows it.
func (r *Rebalancer) size(v *novacronv1.VirtualMachine) migration.Resources {
	if r.Measured && r.Usage != nil {
		if u, ok := r.Usage.Get(v.Namespace, v.Name); ok {
			return footprint(v, r.Launcher, &u)
		}
	}
	return footprint(v, r.Launcher, nil)
}

// writePlan records a dry run's moves in the plan ConfigMap.
func (r *Rebalancer) writePlan(ctx context.Context, moves []migration.Move) error {
	var b strings.Builder
	for _, m := range moves {
		fmt.Fprintf(&b, "%s: %s -> %s\n", m.VM, m.From, m.To)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: PlanConfigMap, Namespace: r.Namespace},
		Data: map[string]string{"plannedAt": time.Now().UTC().Format(time.RFC3339), "moves": b.String()}}
	err := r.Client.Create(ctx, cm)
	if apierrors.IsAlreadyExists(err) {
		// Replace the data without reading it back (the operator caches no
		// ConfigMaps).
		return r.Client.Patch(ctx, cm, client.Merge)
	}
	return err
}
