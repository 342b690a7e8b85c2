package snapshots

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/domain"
	"github.com/novacron/operator/operator/provider"
	"github.com/novacron/operator/operator/snapshot"
	"github.com/novacron/operator/test/testenv"
)

const timeout = 20 * time.Second

func key(name string) client.ObjectKey { return client.ObjectKey{Namespace: ns, Name: name} }

// runningVM creates a VM, binds it to the node and waits until it runs.
func runningVM(t *testing.T, name string, policy *novacronv1.SnapshotPolicy) *novacronv1.VirtualMachine {
	t.Helper()
	v := testenv.NewVM(ns, name, 1, "1Gi")
	v.Spec.Template.Spec.Resources.Disk = ptr.To(resource.MustParse("10Gi"))
	v.Spec.SnapshotPolicy = policy
	require.NoError(t, env.Client.Create(context.Background(), v))
	t.Cleanup(func() { env.DeleteVMAndWait(t, key(name), timeout) })
	env.Bind(t, key(name), node, nil, timeout)
	return env.WaitVM(t, key(name), timeout, "phase Running", testenv.PhaseIs(novacronv1.VMRunning))
}

func takeSnapshot(t *testing.T, name, vmName string) {
	t.Helper()
	require.NoError(t, env.Client.Create(context.Background(), &novacronv1.VirtualMachineSnapshot{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       novacronv1.VirtualMachineSnapshotSpec{VMName: vmName},
	}))
}

func waitSnapshot(t *testing.T, name, what string, ok func(*novacronv1.VirtualMachineSnapshot) bool) *novacronv1.VirtualMachineSnapshot {
	t.Helper()
	var s novacronv1.VirtualMachineSnapshot
	deadline := time.Now().Add(timeout)
	for env.Client.Get(context.Background(), key(name), &s) != nil || !ok(&s) {
		if time.Now().After(deadline) {
			t.Fatalf("snapshot %s: timed out waiting for %s; last seen %+v", name, what, s.Status)
		}
		time.Sleep(testenv.Poll) // polling the API server, as kubectl wait does
	}
	return &s
}

func snapshotPhase(p novacronv1.SnapshotPhase) func(*novacronv1.VirtualMachineSnapshot) bool {
	return func(s *novacronv1.VirtualMachineSnapshot) bool { return s.Status.Phase == p }
}

func readyMessage(conds []metav1.Condition) string {
	if c := meta.FindStatusCondition(conds, novacronv1.ConditionReady); c != nil {
		return c.Message
	}
	return ""
}

func waitRestore(t *testing.T, name string, p novacronv1.RestorePhase) *novacronv1.VirtualMachineRestore {
	t.Helper()
	var r novacronv1.VirtualMachineRestore
	deadline := time.Now().Add(timeout)
	for env.Client.Get(context.Background(), key(name), &r) != nil || r.Status.Phase != p {
		if time.Now().After(deadline) {
			t.Fatalf("restore %s: timed out waiting for %s; last seen %+v", name, p, r.Status)
		}
		time.Sleep(testenv.Poll)
	}
	return &r
}

// onHost lists the domain's snapshots on the simulated node.
func onHost(t *testing.T, v *novacronv1.VirtualMachine) []string {
	t.Helper()
	h, err := hosts.inner.Hypervisor(context.Background(), uri)
	require.NoError(t, err)
	names, err := h.Snapshots(context.Background(), domain.DomainName(v))
	if err != nil {
		require.ErrorIs(t, err, provider.ErrNotFound)
		return nil
	}
	sort.Strings(names)
	return names
}

func gone(t *testing.T, obj client.Object) bool {
	t.Helper()
	err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(obj), obj)
	return apierrors.IsNotFound(err)
}

func TestSnapshotRestoreAndDelete(t *testing.T) {
	ctx := context.Background()
	v := runningVM(t, "snap-vm", nil)

	takeSnapshot(t, "before-upgrade", v.Name)
	s := waitSnapshot(t, "before-upgrade", "Ready", snapshotPhase(novacronv1.SnapshotReady))
	assert.True(t, s.Status.ReadyToUse)
	assert.True(t, s.Status.IncludesMemory, "a running VM's snapshot has its memory")
	assert.Equal(t, novacronv1.SnapshotCrashConsistent, s.Status.Consistency)
	assert.Equal(t, node, s.Status.NodeName)
	assert.Equal(t, int64(1<<30), s.Status.SizeBytes, "its memory state")
	assert.NotNil(t, s.Status.CreationTime)
	assert.Equal(t, v.Name, s.Labels[novacronv1.LabelVM])
	assert.Contains(t, s.Finalizers, snapshot.Finalizer)
	assert.Equal(t, []string{"before-upgrade"}, onHost(t, v))

	// A running VM is not restored unless the restore may stop it.
	require.NoError(t, env.Client.Create(ctx, &novacronv1.VirtualMachineRestore{ObjectMeta: metav1.ObjectMeta{Name: "no-stop", Namespace: ns},
		Spec: novacronv1.VirtualMachineRestoreSpec{VMName: v.Name, SnapshotName: "before-upgrade"}}))
	r := waitRestore(t, "no-stop", novacronv1.RestoreFailed)
	assert.Contains(t, readyMessage(r.Status.Conditions), "is running; stop it first (spec.running: false) or set spec.stopVM: true")
	assert.Equal(t, novacronv1.VMRunning, env.WaitVM(t, key(v.Name), timeout, "still running", testenv.PhaseIs(novacronv1.VMRunning)).Status.Phase)

	// With stopVM it stops the VM, reverts, and starts it again.
	require.NoError(t, env.Client.Create(ctx, &novacronv1.VirtualMachineRestore{ObjectMeta: metav1.ObjectMeta{Name: "rollback", Namespace: ns},
		Spec: novacronv1.VirtualMachineRestoreSpec{VMName: v.Name, SnapshotName: "before-upgrade", StopVM: true}}))
	env.WaitVM(t, key(v.Name), timeout, "stopped for the restore", testenv.PhaseIs(novacronv1.VMStopped))
	r = waitRestore(t, "rollback", novacronv1.RestoreSucceeded)
	assert.True(t, meta.IsStatusConditionTrue(r.Status.Conditions, novacronv1.RestoreConditionStoppedVM))
	assert.NotNil(t, r.Status.StartTime)
	assert.NotNil(t, r.Status.CompletionTime)
	assert.Contains(t, readyMessage(r.Status.Conditions), "restored to snapshot before-upgrade and started again")
	after := env.WaitVM(t, key(v.Name), timeout, "guard lifted", func(v *novacronv1.VirtualMachine) bool {
		return v.Annotations[novacronv1.AnnotationRestoring] == "" && v.Spec.Running != nil && *v.Spec.Running
	})
	assert.Empty(t, after.Annotations[novacronv1.AnnotationRestoring])
	// Its next launcher pod is pinned to the node; bound, it runs again.
	env.Bind(t, key(v.Name), node, nil, timeout)
	env.WaitVM(t, key(v.Name), timeout, "Running again", testenv.PhaseIs(novacronv1.VMRunning))
	h, err := hosts.inner.Hypervisor(ctx, uri)
	require.NoError(t, err)
	st, err := h.State(ctx, domain.DomainName(v))
	require.NoError(t, err)
	assert.Equal(t, provider.StateRunning, st)

	// Deleting the object deletes the hypervisor's snapshot.
	require.NoError(t, env.Client.Delete(ctx, s))
	require.Eventually(t, func() bool { return gone(t, s) }, timeout, testenv.Poll)
	assert.Empty(t, onHost(t, v))

	// Deleting the VM deletes its snapshots.
	takeSnapshot(t, "last", v.Name)
	last := waitSnapshot(t, "last", "Ready", snapshotPhase(novacronv1.SnapshotReady))
	env.DeleteVMAndWait(t, key(v.Name), timeout)
	require.Eventually(t, func() bool { return gone(t, last) }, timeout, testenv.Poll, "the VM's snapshot is deleted with it")
}

func TestOneSnapshotAtATimeAndNeverDuringAMigration(t *testing.T) {
	ctx := context.Background()
	v := runningVM(t, "serial-vm", nil)

	release := hosts.Hold()
	takeSnapshot(t, "first", v.Name)
	waitSnapshot(t, "first", "InProgress", snapshotPhase(novacronv1.SnapshotInProgress))
	takeSnapshot(t, "second", v.Name)
	second := waitSnapshot(t, "second", "waiting for the first", func(s *novacronv1.VirtualMachineSnapshot) bool {
		return s.Status.Phase == novacronv1.SnapshotPending && readyMessage(s.Status.Conditions) != ""
	})
	assert.Contains(t, readyMessage(second.Status.Conditions), "snapshot first of VirtualMachine serial-vm is in progress")
	release()
	waitSnapshot(t, "first", "Ready", snapshotPhase(novacronv1.SnapshotReady))
	waitSnapshot(t, "second", "Ready", snapshotPhase(novacronv1.SnapshotReady))

	// A migration under way holds snapshots back until it ends. It needs a
	// VM that may move and has no snapshots yet; with no scheduler here its
	// target pod is never placed, so it stays under way.
	mover := runningVM(t, "moving-vm", nil)
	patch := client.MergeFrom(mover.DeepCopy())
	mover.Spec.MigrationPolicy = &novacronv1.MigrationPolicy{AllowLiveMigration: true}
	require.NoError(t, env.Client.Patch(ctx, mover, patch))
	mig := &novacronv1.VirtualMachineMigration{ObjectMeta: metav1.ObjectMeta{Name: "moving", Namespace: ns},
		Spec: novacronv1.VirtualMachineMigrationSpec{VMName: mover.Name}}
	require.NoError(t, env.Client.Create(ctx, mig))
	require.Eventually(t, func() bool {
		return env.Client.Get(ctx, client.ObjectKeyFromObject(mig), mig) == nil && mig.Status.Phase == novacronv1.MigrationScheduling
	}, timeout, testenv.Poll, "the migration under way")
	takeSnapshot(t, "during-move", mover.Name)
	during := waitSnapshot(t, "during-move", "waiting for the migration", func(s *novacronv1.VirtualMachineSnapshot) bool {
		return s.Status.Phase == novacronv1.SnapshotPending && readyMessage(s.Status.Conditions) != ""
	})
	// The VM's cached phase or the migration itself may be seen first; both
	// name the move.
	assert.Regexp(t, `VirtualMachine moving-vm is migrating|migration moving of VirtualMachine moving-vm is under way`,
		readyMessage(during.Status.Conditions))
	require.NoError(t, env.Client.Delete(ctx, mig))
	waitSnapshot(t, "during-move", "Ready once the migration is gone", snapshotPhase(novacronv1.SnapshotReady))
}

func TestFailuresAreRetriedThenReported(t *testing.T) {
	v := runningVM(t, "flaky-vm", nil)

	// A failure that passes: retried with backoff, then taken.
	hosts.FailNext(2)
	takeSnapshot(t, "retried", v.Name)
	s := waitSnapshot(t, "retried", "Ready", snapshotPhase(novacronv1.SnapshotReady))
	assert.Equal(t, int32(2), s.Status.FailedAttempts)
	env.WaitEvents(t, key("retried"), timeout, "saying it retries", testenv.HasNote("try 2 of 5 failed, trying again in 40ms: simulated: qemu monitor busy"))

	// One that does not: Failed, with the reason, after five tries.
	hosts.FailNext(5)
	takeSnapshot(t, "doomed", v.Name)
	s = waitSnapshot(t, "doomed", "Failed", snapshotPhase(novacronv1.SnapshotFailed))
	assert.Equal(t, int32(5), s.Status.FailedAttempts)
	assert.Contains(t, readyMessage(s.Status.Conditions), "gave up after 5 tries")

	// What the hypervisor cannot do fails at once, saying so.
	require.NoError(t, env.Client.Create(context.Background(), &novacronv1.VirtualMachineSnapshot{
		ObjectMeta: metav1.ObjectMeta{Name: "disk-only", Namespace: ns},
		Spec:       novacronv1.VirtualMachineSnapshotSpec{VMName: v.Name, DiskOnly: true},
	}))
	s = waitSnapshot(t, "disk-only", "Failed", snapshotPhase(novacronv1.SnapshotFailed))
	assert.Contains(t, readyMessage(s.Status.Conditions), "disk-only snapshot of a running VM")
}

// scheduled lists the VM's scheduled snapshots by name.
func scheduled(t *testing.T, vmName string) []string {
	t.Helper()
	var list novacronv1.VirtualMachineSnapshotList
	require.NoError(t, env.Client.List(context.Background(), &list, client.InNamespace(ns),
		client.MatchingLabels{novacronv1.LabelVM: vmName, novacronv1.LabelSnapshotScheduled: "true"}))
	var names []string
	for _, s := range list.Items {
		if s.DeletionTimestamp.IsZero() {
			names = append(names, s.Name)
		}
	}
	sort.Strings(names)
	return names
}

func slotName(vmName string, slot time.Time) string {
	return fmt.Sprintf("%s-%s", vmName, slot.UTC().Format("20060102-1504"))
}

// waitScheduled waits until the VM's scheduled snapshots are exactly want,
// all Ready, and the VM's status says the newest succeeded.
func waitScheduled(t *testing.T, vmName string, want ...string) *novacronv1.VirtualMachine {
	t.Helper()
	sort.Strings(want)
	done := func() bool {
		got := scheduled(t, vmName)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return false
		}
		for _, n := range got {
			var s novacronv1.VirtualMachineSnapshot
			if env.Client.Get(context.Background(), key(n), &s) != nil || s.Status.Phase != novacronv1.SnapshotReady {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(timeout)
	for !done() {
		if time.Now().After(deadline) {
			t.Fatalf("scheduled snapshots of %s: want %v, have %v; VM status %+v", vmName, want, scheduled(t, vmName), vmSnapshotStatus(t, vmName))
		}
		time.Sleep(testenv.Poll)
	}
	return env.WaitVM(t, key(vmName), timeout, "last result Succeeded", func(v *novacronv1.VirtualMachine) bool {
		return v.Status.Snapshot != nil && v.Status.Snapshot.LastResult == "Succeeded"
	})
}

func TestScheduleRetentionAndCatchUp(t *testing.T) {
	// Every 10 minutes, keep 2. The operator's clock is behind the API
	// server's (by an hour, so that the case is certain): the first slot is
	// the first after the VM exists, not one before it that would never be
	// taken.
	clock.SetTime(time.Now().Add(-time.Hour))
	v := runningVM(t, "cron-vm", &novacronv1.SnapshotPolicy{Schedule: "*/10 * * * *", Retention: 2})
	slot1 := v.CreationTimestamp.Time.Truncate(10 * time.Minute).Add(10 * time.Minute)
	got := env.WaitVM(t, key(v.Name), timeout, "next schedule time", func(v *novacronv1.VirtualMachine) bool {
		return v.Status.Snapshot != nil && v.Status.Snapshot.NextScheduleTime != nil
	})
	assert.True(t, got.Status.Snapshot.NextScheduleTime.Time.Equal(slot1), "next %s, want %s", got.Status.Snapshot.NextScheduleTime, slot1)
	assert.Empty(t, scheduled(t, v.Name), "nothing before the first slot")

	// A snapshot taken by hand is never counted or deleted by the policy.
	takeSnapshot(t, "cron-vm-manual", v.Name)
	waitSnapshot(t, "cron-vm-manual", "Ready", snapshotPhase(novacronv1.SnapshotReady))

	clock.SetTime(slot1.Add(time.Second))
	got = waitScheduled(t, v.Name, slotName(v.Name, slot1))
	assert.True(t, got.Status.Snapshot.LastScheduleTime.Time.Equal(slot1))
	slot2, slot3 := slot1.Add(10*time.Minute), slot1.Add(20*time.Minute)
	clock.SetTime(slot2.Add(time.Second))
	waitScheduled(t, v.Name, slotName(v.Name, slot1), slotName(v.Name, slot2))
	clock.SetTime(slot3.Add(time.Second))
	// Retention 2: the oldest scheduled one goes, exactly that one.
	got = waitScheduled(t, v.Name, slotName(v.Name, slot2), slotName(v.Name, slot3))
	assert.True(t, got.Status.Snapshot.NextScheduleTime.Time.Equal(slot3.Add(10*time.Minute)))

	// Down for an hour (six slots): one snapshot, for the latest slot.
	latest := slot3.Add(60 * time.Minute)
	clock.SetTime(latest.Add(5 * time.Minute))
	got = waitScheduled(t, v.Name, slotName(v.Name, slot3), slotName(v.Name, latest))
	assert.Equal(t, slotName(v.Name, latest), got.Status.Snapshot.LastSnapshotName)
	assert.True(t, got.Status.Snapshot.LastScheduleTime.Time.Equal(latest))
	var manual novacronv1.VirtualMachineSnapshot
	require.NoError(t, env.Client.Get(context.Background(), key("cron-vm-manual"), &manual), "the manual snapshot is kept")

	// A failed scheduled snapshot shows on the VM.
	hosts.FailNext(5)
	failedSlot := latest.Add(10 * time.Minute)
	clock.SetTime(failedSlot.Add(time.Second))
	got = env.WaitVM(t, key(v.Name), timeout, "last result Failed", func(v *novacronv1.VirtualMachine) bool {
		return v.Status.Snapshot != nil && v.Status.Snapshot.LastResult == "Failed"
	})
	assert.Contains(t, got.Status.Snapshot.Message, "snapshot "+slotName(v.Name, failedSlot)+" failed: gave up after 5 tries")
}

func TestScheduleThatNeverFiresIsReported(t *testing.T) {
	// The webhook refuses it; with webhooks off, the VM's status says so.
	v := runningVM(t, "feb-30-vm", &novacronv1.SnapshotPolicy{Schedule: "0 2 30 2 *", Retention: 3})
	got := env.WaitVM(t, key(v.Name), timeout, "schedule reported", func(v *novacronv1.VirtualMachine) bool {
		return v.Status.Snapshot != nil && v.Status.Snapshot.LastResult == "Failed"
	})
	assert.Contains(t, got.Status.Snapshot.Message, "spec.snapshotPolicy.schedule \"0 2 30 2 *\": never fires")
	assert.Nil(t, got.Status.Snapshot.NextScheduleTime)
}

func vmSnapshotStatus(t *testing.T, name string) any {
	var v novacronv1.VirtualMachine
	if err := env.Client.Get(context.Background(), key(name), &v); err != nil || v.Status.Snapshot == nil {
		return nil
	}
	return *v.Status.Snapshot
}
