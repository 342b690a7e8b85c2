package migration

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/migration"
	"github.com/novacron/operator/operator/domain"
	"github.com/novacron/operator/operator/launcher"
	"github.com/novacron/operator/operator/livemigration"
	"github.com/novacron/operator/operator/provider"
	"github.com/novacron/operator/operator/usage"
	"github.com/novacron/operator/policies"
	"github.com/novacron/operator/test/testenv"
)

const (
	ns      = "default"
	timeout = 30 * time.Second
)

func key(name string) client.ObjectKey { return client.ObjectKey{Namespace: ns, Name: name} }

// runningVM creates a migratable VM and waits until it runs where the
// scheduler put it.
func runningVM(t *testing.T, name string) *novacronv1.VirtualMachine {
	t.Helper()
	v := testenv.NewVM(ns, name, 1, "1Gi")
	v.Spec.Template.Spec.Resources.Disk = ptr.To(resource.MustParse("10Gi"))
	v.Spec.MigrationPolicy = &novacronv1.MigrationPolicy{AllowLiveMigration: true, Bandwidth: "1Gbps"}
	require.NoError(t, env.Client.Create(context.Background(), v))
	t.Cleanup(func() { env.DeleteVMAndWait(t, key(name), timeout) })
	return env.WaitVM(t, key(name), timeout, "phase Running", testenv.PhaseIs(novacronv1.VMRunning))
}

func migrate(t *testing.T, name, vmName string) *novacronv1.VirtualMachineMigration {
	t.Helper()
	m := &novacronv1.VirtualMachineMigration{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: novacronv1.VirtualMachineMigrationSpec{VMName: vmName}}
	require.NoError(t, env.Client.Create(context.Background(), m))
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), m) })
	return m
}

func waitMigration(t *testing.T, name, what string, ok func(*novacronv1.VirtualMachineMigration) bool) *novacronv1.VirtualMachineMigration {
	t.Helper()
	var m novacronv1.VirtualMachineMigration
	deadline := time.Now().Add(timeout)
	for env.Client.Get(context.Background(), key(name), &m) != nil || !ok(&m) {
		if time.Now().After(deadline) {
			t.Fatalf("migration %s: timed out waiting for %s; last seen %+v", name, what, m.Status)
		}
		time.Sleep(testenv.Poll)
	}
	return &m
}

func phaseIs(p novacronv1.MigrationPhase) func(*novacronv1.VirtualMachineMigration) bool {
	return func(m *novacronv1.VirtualMachineMigration) bool { return m.Status.Phase == p }
}

// waitInFlight waits until the migration runs on the source and reports
// progress, not merely recorded as Running.
func waitInFlight(t *testing.T, name string) *novacronv1.VirtualMachineMigration {
	t.Helper()
	return waitMigration(t, name, "Running with progress", func(m *novacronv1.VirtualMachineMigration) bool {
		return m.Status.Phase == novacronv1.MigrationRunning && m.Status.Progress != nil
	})
}

// assertOnSource waits until the VM, its migration ended, runs again, and
// checks that it runs on source.
func assertOnSource(t *testing.T, v *novacronv1.VirtualMachine, source string) {
	t.Helper()
	got := env.WaitVM(t, key(v.Name), timeout, "Running on the source", func(x *novacronv1.VirtualMachine) bool {
		return x.Status.Phase == novacronv1.VMRunning && x.Status.MigrationState == nil
	})
	assert.Equal(t, source, got.Status.NodeName)
	assert.Equal(t, provider.StateRunning, domainState(t, source, v))
}

func message(m *novacronv1.VirtualMachineMigration) string {
	if c := meta.FindStatusCondition(m.Status.Conditions, novacronv1.ConditionReady); c != nil {
		return c.Message
	}
	return ""
}

// domainState is the VM's domain on a node, "" when absent.
func domainState(t *testing.T, node string, v *novacronv1.VirtualMachine) provider.DomainState {
	t.Helper()
	h, err := hosts.inner.Hypervisor(context.Background(), uris[node])
	require.NoError(t, err)
	st, err := h.State(context.Background(), domain.DomainName(v))
	if err != nil {
		require.ErrorIs(t, err, provider.ErrNotFound)
		return ""
	}
	return st
}

func other(node string) string {
	if node == "node-1" {
		return "node-2"
	}
	return "node-1"
}

func podExists(t *testing.T, name string) bool {
	t.Helper()
	err := env.Client.Get(context.Background(), key(name), &corev1.Pod{})
	if apierrors.IsNotFound(err) {
		return false
	}
	require.NoError(t, err)
	return true
}

func TestMigrationMovesTheVM(t *testing.T) {
	v := runningVM(t, "mover")
	source, oldPod := v.Status.NodeName, v.Status.LauncherPod
	target := other(source)

	migrate(t, "move-1", v.Name)
	m := waitMigration(t, "move-1", "Succeeded", phaseIs(novacronv1.MigrationSucceeded))
	assert.Equal(t, source, m.Status.SourceNode)
	assert.Equal(t, target, m.Status.TargetNode, "never the source node")
	require.NotNil(t, m.Status.Progress)
	assert.Equal(t, int64(42), m.Status.Progress.DowntimeMilliseconds)
	assert.NotNil(t, m.Status.StartTime)
	assert.NotNil(t, m.Status.CompletionTime)
	assert.Contains(t, message(m), "now runs on node "+target+" (downtime 42 ms)")
	m = waitMigration(t, "move-1", "source cleaned", func(m *novacronv1.VirtualMachineMigration) bool {
		return meta.IsStatusConditionTrue(m.Status.Conditions, novacronv1.MigrationConditionSourceCleaned)
	})
	h, err := hosts.inner.Hypervisor(context.Background(), uris[source])
	require.NoError(t, err)
	_, err = h.VolumePath(context.Background(), "default", domain.RootVolumeName(v))
	assert.ErrorIs(t, err, provider.ErrNotFound, "the stale root disk is gone from the source")

	got := env.WaitVM(t, key(v.Name), timeout, "Running on the target", func(x *novacronv1.VirtualMachine) bool {
		return x.Status.Phase == novacronv1.VMRunning && x.Status.NodeName == target
	})
	assert.Nil(t, got.Status.MigrationState)
	assert.Equal(t, m.Status.TargetPod, got.Status.LauncherPod, "the target pod is the VM's launcher pod now")
	assert.False(t, podExists(t, oldPod), "the source pod is removed")
	var pod corev1.Pod
	require.NoError(t, env.Client.Get(context.Background(), key(m.Status.TargetPod), &pod))
	assert.Equal(t, target, pod.Spec.NodeName)
	assert.True(t, metav1.IsControlledBy(&pod, got))
	assert.Equal(t, provider.StateRunning, domainState(t, target, v))
	assert.Equal(t, provider.DomainState(""), domainState(t, source, v), "the domain is on one hypervisor only")

	// It stays there: the VM controller takes it over on the target.
	env.PatchRunning(t, key(v.Name), false)
	env.WaitVM(t, key(v.Name), timeout, "Stopped", testenv.PhaseIs(novacronv1.VMStopped))
	env.PatchRunning(t, key(v.Name), true)
	back := env.WaitVM(t, key(v.Name), timeout, "Running again", testenv.PhaseIs(novacronv1.VMRunning))
	assert.Equal(t, target, back.Status.NodeName)
	assert.Equal(t, launcher.PodName(v.Name), back.Status.LauncherPod)
}

func TestFailedMigrationLeavesTheVMOnTheSource(t *testing.T) {
	v := runningVM(t, "stayer")
	source := v.Status.NodeName
	hosts.FailNext(1)

	migrate(t, "doomed", v.Name)
	m := waitMigration(t, "doomed", "Failed", phaseIs(novacronv1.MigrationFailed))
	assert.Contains(t, message(m), "migration stream broken")
	assert.False(t, podExists(t, m.Status.TargetPod), "the target pod is cleaned up")
	assertOnSource(t, v, source)
	assert.Equal(t, provider.DomainState(""), domainState(t, other(source), v), "no domain left on the target")
}

// takeDown makes node unreachable until it is brought back or the test ends.
func takeDown(t *testing.T, node string) {
	hosts.SetDown(uris[node], true)
	t.Cleanup(func() { hosts.SetDown(uris[node], false) })
}

// The target's libvirtd dies mid-migration, before the operator's own
// connection to it has noticed: the migration fails and the VM stays on the
// source, without waiting for the target to come back.
func TestUnreachableTargetFailsTheMigrationOnTheSource(t *testing.T) {
	v := runningVM(t, "abandoned")
	source := v.Status.NodeName
	release := hosts.Hold()
	migrate(t, "target-lost", v.Name)
	m := waitInFlight(t, "target-lost")
	takeDown(t, m.Status.TargetNode)
	release()

	m = waitMigration(t, "target-lost", "Failed", phaseIs(novacronv1.MigrationFailed))
	assert.Contains(t, message(m), "node "+other(source)+" stopped answering during the migration")
	assert.Contains(t, message(m), "node "+other(source)+" cannot be reached")
	assertOnSource(t, v, source)
	assert.False(t, podExists(t, m.Status.TargetPod), "the target pod is cleaned up")
}

// A restarted operator finds a migration whose target is unreachable: the VM
// still runs on the source, so the migration fails there.
func TestOperatorRestartWithTheTargetDownRollsBack(t *testing.T) {
	v := runningVM(t, "orphaned")
	source := v.Status.NodeName
	release := hosts.Hold()
	migrate(t, "restart-target-lost", v.Name)
	m := waitInFlight(t, "restart-target-lost")
	require.NoError(t, restartOperator())
	takeDown(t, m.Status.TargetNode)
	release()

	m = waitMigration(t, "restart-target-lost", "Failed", phaseIs(novacronv1.MigrationFailed))
	assert.Contains(t, message(m), "operator restarted")
	assert.Contains(t, message(m), "node "+other(source)+" cannot be reached")
	assertOnSource(t, v, source)
}

// The source shows the guest paused, as while switching over, when the
// target is lost: the guest may already run there, so the migration waits
// for the target rather than roll back into a guest running on two nodes;
// when the target is back and runs it, the migration succeeds.
func TestLostTargetDuringSwitchOverIsWaitedFor(t *testing.T) {
	ctx := context.Background()
	v := runningVM(t, "switcher")
	source := v.Status.NodeName
	target := other(source)
	domain := domain.DomainName(v)
	release := hosts.Hold()
	migrate(t, "switch-over", v.Name)
	waitInFlight(t, "switch-over")
	// The guest switched over: paused on the source, running on the target.
	hosts.mu.Lock()
	def := hosts.defs[uris[source]+"/"+domain]
	hosts.mu.Unlock()
	tgt, err := hosts.inner.Hypervisor(ctx, uris[target])
	require.NoError(t, err)
	require.NoError(t, tgt.Define(ctx, def))
	require.NoError(t, tgt.Start(ctx, domain))
	hosts.pause(uris[source], domain)
	takeDown(t, target)
	release()

	m := waitMigration(t, "switch-over", "waiting for the target", func(m *novacronv1.VirtualMachineMigration) bool {
		c := meta.FindStatusCondition(m.Status.Conditions, novacronv1.ConditionReady)
		return c != nil && c.Reason == "WaitingForTarget"
	})
	assert.Equal(t, novacronv1.MigrationRunning, m.Status.Phase, "not decided without the target")
	assert.Equal(t, "the guest is paused on node "+source+" and node "+target+", which may already run it, cannot be reached; waiting for node "+target, message(m))
	assert.Equal(t, provider.StateRunning, domainState(t, target, v), "its copy on the target is left alone")
	inFlight := env.WaitVM(t, key(v.Name), timeout, "still Migrating", testenv.PhaseIs(novacronv1.VMMigrating))
	assert.Equal(t, "switch-over", inFlight.Status.MigrationState.MigrationName)

	hosts.SetDown(uris[target], false)
	// Succeeded is written before the source is cleaned (recorded, so a
	// restart still cleans it): wait for both.
	m = waitMigration(t, "switch-over", "Succeeded and the source cleaned", func(m *novacronv1.VirtualMachineMigration) bool {
		return m.Status.Phase == novacronv1.MigrationSucceeded && meta.IsStatusConditionTrue(m.Status.Conditions, novacronv1.MigrationConditionSourceCleaned)
	})
	got := env.WaitVM(t, key(v.Name), timeout, "Running on the target", func(x *novacronv1.VirtualMachine) bool {
		return x.Status.Phase == novacronv1.VMRunning && x.Status.NodeName == target
	})
	assert.Equal(t, m.Status.TargetPod, got.Status.LauncherPod)
	assert.Equal(t, provider.DomainState(""), domainState(t, source, v), "exactly one node has it")
}

func TestCancelAbortsAndRollsBack(t *testing.T) {
	v := runningVM(t, "canceller")
	source := v.Status.NodeName
	release := hosts.Hold()
	defer release()

	migrate(t, "cancelled", v.Name)
	m := waitInFlight(t, "cancelled")
	assert.Equal(t, int64(1<<29), m.Status.Progress.DataRemainingBytes)
	inFlight := env.WaitVM(t, key(v.Name), timeout, "Migrating", testenv.PhaseIs(novacronv1.VMMigrating))
	require.NotNil(t, inFlight.Status.MigrationState)
	assert.Equal(t, "cancelled", inFlight.Status.MigrationState.MigrationName)

	patch := client.MergeFrom(m.DeepCopy())
	m.Spec.Cancel = true
	require.NoError(t, env.Client.Patch(context.Background(), m, patch))
	m = waitMigration(t, "cancelled", "Cancelled", phaseIs(novacronv1.MigrationCancelled))
	assert.Contains(t, message(m), "cancel")
	assertOnSource(t, v, source)
	assert.False(t, podExists(t, m.Status.TargetPod))
}

// Deleting a VM mid-migration cancels the migration, waits for it, and then
// removes the domain: neither node keeps a copy, none runs untracked.
func TestDeletingAVMMidMigrationLeavesNoDomain(t *testing.T) {
	v := runningVM(t, "deleted-mid-flight")
	source := v.Status.NodeName
	release := hosts.Hold()
	defer release()
	migrate(t, "deleted-move", v.Name)
	m := waitInFlight(t, "deleted-move")
	env.WaitVM(t, key(v.Name), timeout, "Migrating", testenv.PhaseIs(novacronv1.VMMigrating))

	require.NoError(t, env.Client.Delete(context.Background(), v))
	require.Eventually(t, func() bool {
		return apierrors.IsNotFound(env.Client.Get(context.Background(), key(v.Name), &novacronv1.VirtualMachine{}))
	}, timeout, testenv.Poll, "the VM is deleted")
	assert.Equal(t, provider.DomainState(""), domainState(t, source, v), "not on the source")
	assert.Equal(t, provider.DomainState(""), domainState(t, other(source), v), "not on the target")
	// The migration hands the VM back before its own finalizer goes.
	require.Eventually(t, func() bool {
		return apierrors.IsNotFound(env.Client.Get(context.Background(), key(m.Name), &novacronv1.VirtualMachineMigration{}))
	}, timeout, testenv.Poll, "the migration is gone")
	assert.False(t, podExists(t, m.Status.TargetPod))
}

func TestOutboundLimitQueuesMigrations(t *testing.T) {
	// The scheduler spreads: put both VMs on one node by moving the second
	// there first if needed.
	a := runningVM(t, "limit-a")
	b := runningVM(t, "limit-b")
	if b.Status.NodeName != a.Status.NodeName {
		migrate(t, "limit-gather", b.Name)
		waitMigration(t, "limit-gather", "Succeeded", phaseIs(novacronv1.MigrationSucceeded))
	}
	release := hosts.Hold()
	migrate(t, "limit-1", a.Name)
	waitMigration(t, "limit-1", "Running", phaseIs(novacronv1.MigrationRunning))
	migrate(t, "limit-2", b.Name)
	queued := waitMigration(t, "limit-2", "waiting for the node's limit", func(m *novacronv1.VirtualMachineMigration) bool {
		return m.Status.Phase == novacronv1.MigrationPending && message(m) != ""
	})
	assert.Contains(t, message(queued), "1 migrations are leaving node "+a.Status.NodeName+", its limit")
	release()
	waitMigration(t, "limit-1", "Succeeded", phaseIs(novacronv1.MigrationSucceeded))
	waitMigration(t, "limit-2", "Succeeded", phaseIs(novacronv1.MigrationSucceeded))
}

func TestOperatorRestartMidMigrationEndsOnOneNode(t *testing.T) {
	v := runningVM(t, "restarter")
	source := v.Status.NodeName
	release := hosts.Hold()
	migrate(t, "interrupted", v.Name)
	// In flight on the source (it reports progress), not merely recorded.
	waitInFlight(t, "interrupted")

	// The operator goes away while the source's libvirtd still drives the
	// migration; the new one finds it there and follows it to its end.
	require.NoError(t, restartOperator())
	release()
	m := waitMigration(t, "interrupted", "Succeeded", phaseIs(novacronv1.MigrationSucceeded))
	got := env.WaitVM(t, key(v.Name), timeout, "Running on the target", func(x *novacronv1.VirtualMachine) bool {
		return x.Status.Phase == novacronv1.VMRunning && x.Status.NodeName == m.Status.TargetNode
	})
	assert.Equal(t, other(source), got.Status.NodeName)
	assert.Equal(t, provider.StateRunning, domainState(t, other(source), v))
	assert.Equal(t, provider.DomainState(""), domainState(t, source, v), "exactly one node runs it")
}

// deleteMigrationsAtEnd removes, when the test ends, the migrations the
// operator created for it (drain, rebalance), so that a rerun (-count) starts
// clean.
func deleteMigrationsAtEnd(t *testing.T) {
	t.Cleanup(func() {
		require.NoError(t, env.Client.DeleteAllOf(context.Background(), &novacronv1.VirtualMachineMigration{}, client.InNamespace(ns)))
	})
}

func setUnschedulable(t *testing.T, node string, on bool) {
	t.Helper()
	n := &corev1.Node{}
	require.NoError(t, env.Client.Get(context.Background(), client.ObjectKey{Name: node}, n))
	patch := client.MergeFrom(n.DeepCopy())
	n.Spec.Unschedulable = on
	require.NoError(t, env.Client.Patch(context.Background(), n, patch))
}

func TestDrainEvacuatesWhatCanMoveAndSaysWhatCannot(t *testing.T) {
	ctx := context.Background()
	deleteMigrationsAtEnd(t)
	mover := runningVM(t, "drain-mover")
	node := mover.Status.NodeName
	stuck := runningVM(t, "drain-stuck")
	if stuck.Status.NodeName != node {
		migrate(t, "drain-gather", stuck.Name)
		waitMigration(t, "drain-gather", "Succeeded", phaseIs(novacronv1.MigrationSucceeded))
	}
	// This one may not move live.
	s := &novacronv1.VirtualMachine{}
	require.NoError(t, env.Client.Get(ctx, key(stuck.Name), s))
	patch := client.MergeFrom(s.DeepCopy())
	s.Spec.MigrationPolicy.AllowLiveMigration = false
	require.NoError(t, env.Client.Patch(ctx, s, patch))

	// A dry run first: where each VM would go, or why it stays.
	hv := &novacronv1.Hypervisor{}
	require.NoError(t, env.Client.Get(ctx, client.ObjectKey{Name: node}, hv))
	hpatch := client.MergeFrom(hv.DeepCopy())
	hv.Annotations = map[string]string{novacronv1.AnnotationEvacuationPlan: "1"}
	require.NoError(t, env.Client.Patch(ctx, hv, hpatch))
	require.Eventually(t, func() bool {
		return env.Client.Get(ctx, client.ObjectKey{Name: node}, hv) == nil && hv.Status.EvacuationPlan != nil && hv.Status.EvacuationPlan.Request == "1"
	}, timeout, testenv.Poll, "an evacuation plan")
	plan := map[string]novacronv1.EvacuationEntry{}
	for _, e := range hv.Status.EvacuationPlan.VMs {
		plan[e.VM] = e
	}
	assert.Equal(t, other(node), plan["default/drain-mover"].Target)
	assert.Contains(t, plan["default/drain-stuck"].Blocker, "does not allow live migration")
	assert.Equal(t, node, env.WaitVM(t, key(mover.Name), timeout, "still there", testenv.PhaseIs(novacronv1.VMRunning)).Status.NodeName, "a dry run moves nothing")

	// Cordon: the movable VM leaves; the other is listed with why.
	setUnschedulable(t, node, true)
	t.Cleanup(func() { setUnschedulable(t, node, false) })
	m := waitMigration(t, "drain-mover-drain-"+node, "Succeeded", phaseIs(novacronv1.MigrationSucceeded))
	assert.Equal(t, novacronv1.MigrationDrain, m.Spec.Reason)
	assert.Equal(t, other(node), env.WaitVM(t, key(mover.Name), timeout, "moved", func(x *novacronv1.VirtualMachine) bool {
		return x.Status.NodeName == other(node) && x.Status.Phase == novacronv1.VMRunning
	}).Status.NodeName)
	require.Eventually(t, func() bool {
		return env.Client.Get(ctx, client.ObjectKey{Name: node}, hv) == nil && hv.Status.Evacuation != nil &&
			len(hv.Status.Evacuation.Blocked) == 1 && len(hv.Status.Evacuation.Migrating) == 0
	}, timeout, testenv.Poll, "the evacuation status")
	assert.Equal(t, "Cordoned", hv.Status.Evacuation.Reason)
	assert.Equal(t, "default/drain-stuck", hv.Status.Evacuation.Blocked[0].VM)
	assert.Contains(t, hv.Status.Evacuation.Blocked[0].Blocker, "does not allow live migration")
	assert.Equal(t, node, env.WaitVM(t, key(stuck.Name), timeout, "stays", testenv.PhaseIs(novacronv1.VMRunning)).Status.NodeName)

	// Uncordoned, the node is no longer evacuated.
	setUnschedulable(t, node, false)
	require.Eventually(t, func() bool {
		return env.Client.Get(ctx, client.ObjectKey{Name: node}, hv) == nil && hv.Status.Evacuation == nil
	}, timeout, testenv.Poll, "the evacuation status cleared")
}

func TestRebalancerMovesOffAHotNode(t *testing.T) {
	ctx := context.Background()
	deleteMigrationsAtEnd(t)
	// Three 5-vCPU VMs on one 16-CPU node: 94% loaded, the other node empty.
	var vms []*novacronv1.VirtualMachine
	for _, name := range []string{"rb-1", "rb-2", "rb-3"} {
		v := testenv.NewVM(ns, name, 5, "4Gi")
		v.Spec.Template.Spec.Resources.Disk = ptr.To(resource.MustParse("10Gi"))
		v.Spec.MigrationPolicy = &novacronv1.MigrationPolicy{AllowLiveMigration: true}
		require.NoError(t, env.Client.Create(ctx, v))
		t.Cleanup(func() { env.DeleteVMAndWait(t, key(v.Name), timeout) })
		vms = append(vms, env.WaitVM(t, key(name), timeout, "Running", testenv.PhaseIs(novacronv1.VMRunning)))
	}
	for _, v := range vms {
		if v.Status.NodeName != "node-1" {
			m := &novacronv1.VirtualMachineMigration{ObjectMeta: metav1.ObjectMeta{Name: v.Name + "-gather", Namespace: ns},
				Spec: novacronv1.VirtualMachineMigrationSpec{VMName: v.Name, TargetNodeName: "node-1"}}
			require.NoError(t, env.Client.Create(ctx, m))
			waitMigration(t, m.Name, "done", func(m *novacronv1.VirtualMachineMigration) bool { return m.Status.Phase.Done() })
		}
	}
	measured := &usage.Store{}
	r := &livemigration.Rebalancer{Client: env.Client, Namespace: "novacron-system", Config: migration.RebalanceConfig{High: 0.8, Target: 0.7}, Cooldown: time.Hour, Usage: measured}
	var onOne int
	for _, v := range vms {
		if env.WaitVM(t, key(v.Name), timeout, "Running", testenv.PhaseIs(novacronv1.VMRunning)).Status.NodeName == "node-1" {
			onOne++
		}
	}
	require.Equal(t, 3, onOne, "all three gathered on node-1")

	// A migration policy that vetoes rebalancing keeps every VM in place.
	engine, err := policies.NewEngine()
	require.NoError(t, err)
	require.NoError(t, engine.Upsert(ctx, &novacronv1.VirtualMachinePolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "no-rebalance"},
		Spec: novacronv1.VirtualMachinePolicySpec{DecisionPoints: []novacronv1.DecisionPoint{novacronv1.DecisionMigration}, Enforcement: novacronv1.EnforcementDeny,
			Rego: "package test.norebalance\n\ndeny_migration contains \"the rebalancer is paused\" if input.reason == \"Rebalance\"\n"},
	}))
	r.Policies, r.DryRun = engine, true
	vetoed, err := r.Round(ctx)
	require.NoError(t, err)
	assert.Empty(t, vetoed, "every move vetoed")
	r.Policies = nil

	// By measured use the same VMs are idle: the node is not hot.
	for _, v := range vms {
		measured.Record(ns, v.Name, usage.Usage{Cores: 0.5, MemoryBytes: 1 << 30})
	}
	r.Measured, r.DryRun = true, true
	idle, err := r.Round(ctx)
	require.NoError(t, err)
	assert.Empty(t, idle, "1.5 of 16 cores used")
	r.Measured = false

	// Dry run: the plan, nothing moved.
	r.DryRun = true
	moves, err := r.Round(ctx)
	require.NoError(t, err)
	require.Len(t, moves, 1, "one 5-vCPU VM brings 15/16 to 10/16")
	assert.Equal(t, "node-2", moves[0].To)
	var cm corev1.ConfigMap
	require.NoError(t, env.Client.Get(ctx, client.ObjectKey{Namespace: "novacron-system", Name: livemigration.PlanConfigMap}, &cm))
	assert.Contains(t, cm.Data["moves"], moves[0].VM+": node-1 -> node-2")

	// For real: a Rebalance migration to the planned node; a second round
	// right away does nothing while it runs or cools down.
	r.DryRun = false
	moves, err = r.Round(ctx)
	require.NoError(t, err)
	require.Len(t, moves, 1)
	var migs novacronv1.VirtualMachineMigrationList
	require.NoError(t, env.Client.List(ctx, &migs, client.InNamespace(ns)))
	var mine []novacronv1.VirtualMachineMigration
	for _, m := range migs.Items {
		if m.Spec.Reason == novacronv1.MigrationRebalance {
			mine = append(mine, m)
		}
	}
	require.Len(t, mine, 1)
	assert.Equal(t, "node-2", mine[0].Spec.TargetNodeName)
	again, err := r.Round(ctx)
	require.NoError(t, err)
	assert.Empty(t, again, "no new round while the last one moves")
	waitMigration(t, mine[0].Name, "Succeeded", phaseIs(novacronv1.MigrationSucceeded))
	again, err = r.Round(ctx)
	require.NoError(t, err)
	assert.Empty(t, again, "balanced now")
}
