package snapshot

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/fakecluster"
	"github.com/novacron/operator/operator/provider"
	"github.com/novacron/operator/operator/provider/fake"
)

const ns = "team"

type env struct {
	*fakecluster.Cluster
	host  *fake.Host
	clock *clocktesting.FakeClock
}

// newEnv is a node with VM "web" running on it.
func newEnv(t *testing.T) *env {
	t.Helper()
	c := fakecluster.New(t)
	c.Node(t, "node-1", 16, "64Gi")
	e := &env{Cluster: c, host: c.Hosts.Host("fake://node-1"), clock: clocktesting.NewFakeClock(time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC))}
	v := &novacronv1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns, UID: "uid-web"}}
	v.Spec.Running = ptr.To(true)
	v.Spec.Template.Spec.Resources = novacronv1.VMResources{CPU: 1, Memory: resource.MustParse("1Gi")}
	require.NoError(t, c.Client.Create(t.Context(), v))
	v.Status = novacronv1.VirtualMachineStatus{Phase: novacronv1.VMRunning, NodeName: "node-1"}
	require.NoError(t, c.Client.Status().Update(t.Context(), v))
	require.NoError(t, e.host.Define(t.Context(), provider.Domain{Name: "team_web", UUID: "uid-web", MemoryBytes: 1 << 30}))
	require.NoError(t, e.host.Start(t.Context(), "team_web"))
	return e
}

func (e *env) snapshots() *Reconciler {
	return &Reconciler{Client: e.Client, APIReader: e.Client, Recorder: e.Events, Hypervisors: e.Hosts, Clock: e.clock,
		MaxAttempts: 3, RetryBase: time.Second, Wait: time.Second}
}

func run(t *testing.T, r reconcile.Reconciler, name string) reconcile.Result {
	t.Helper()
	return fakecluster.Reconcile(t, r, ns, name)
}

func (e *env) snapshot(t *testing.T, name string) *novacronv1.VirtualMachineSnapshot {
	t.Helper()
	s := &novacronv1.VirtualMachineSnapshot{}
	require.NoError(t, e.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, s))
	return s
}

func (e *env) take(t *testing.T, r *Reconciler, name string) *novacronv1.VirtualMachineSnapshot {
	t.Helper()
	require.NoError(t, e.Client.Create(t.Context(), &novacronv1.VirtualMachineSnapshot{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: novacronv1.VirtualMachineSnapshotSpec{VMName: "web"}}))
	run(t, r, name) // finalizer and label
	run(t, r, name)
	return e.snapshot(t, name)
}

func readyCondition(conds []metav1.Condition) metav1.Condition {
	if c := meta.FindStatusCondition(conds, novacronv1.ConditionReady); c != nil {
		return *c
	}
	return metav1.Condition{}
}

func TestASnapshotIsTakenOnTheVMsNodeAndDeletedWithIt(t *testing.T) {
	e := newEnv(t)
	r := e.snapshots()
	s := e.take(t, r, "before-upgrade")
	assert.Equal(t, novacronv1.SnapshotReady, s.Status.Phase)
	assert.True(t, s.Status.ReadyToUse)
	assert.Equal(t, "node-1", s.Status.NodeName)
	assert.True(t, s.Status.IncludesMemory, "a running VM's snapshot holds its memory")
	assert.Equal(t, novacronv1.SnapshotCrashConsistent, s.Status.Consistency)
	assert.Equal(t, "web", s.Labels[novacronv1.LabelVM])
	names, err := e.host.Snapshots(t.Context(), "team_web")
	require.NoError(t, err)
	assert.Equal(t, []string{"before-upgrade"}, names)
	assert.True(t, fakecluster.HasEvent(e.EventsSeen(), corev1.EventTypeNormal, novacronv1.ReasonSnapshotTaken, "before-upgrade"))

	require.NoError(t, e.Client.Delete(t.Context(), s))
	run(t, r, "before-upgrade")
	names, _ = e.host.Snapshots(t.Context(), "team_web")
	assert.Empty(t, names, "deleted on the node")
	assert.True(t, apierrors.IsNotFound(e.Client.Get(t.Context(), client.ObjectKeyFromObject(s), s)))
}

// A node whose Hypervisor object is gone took its snapshots along: the
// delete says so and goes on.
func TestASnapshotOfAGoneNodeIsDeleted(t *testing.T) {
	e := newEnv(t)
	r := e.snapshots()
	s := e.take(t, r, "before-upgrade")
	require.NoError(t, e.Client.Delete(t.Context(), &novacronv1.Hypervisor{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}))
	require.NoError(t, e.Client.Delete(t.Context(), s))
	run(t, r, "before-upgrade")
	assert.True(t, apierrors.IsNotFound(e.Client.Get(t.Context(), client.ObjectKeyFromObject(s), s)))
	assert.True(t, fakecluster.HasEvent(e.EventsSeen(), corev1.EventTypeWarning, novacronv1.ReasonHypervisorGone, "no longer exists"))
}

// A try that may pass is retried with a doubling wait, then the snapshot
// fails for good with the reason.
func TestFailuresAreRetriedThenReported(t *testing.T) {
	e := newEnv(t)
	r := e.snapshots()
	e.host.FailNext("CreateSnapshot", errors.New("disk busy"))
	s := e.take(t, r, "nightly")
	assert.Equal(t, novacronv1.SnapshotInProgress, s.Status.Phase)
	assert.Equal(t, int32(1), s.Status.FailedAttempts)
	assert.Equal(t, novacronv1.ReasonRetrying, readyCondition(s.Status.Conditions).Reason)

	e.host.FailNext("CreateSnapshot", errors.New("disk busy"))
	res := run(t, r, "nightly")
	assert.Equal(t, 2*time.Second, res.RequeueAfter, "the wait doubles")
	e.host.FailNext("CreateSnapshot", errors.New("disk busy"))
	run(t, r, "nightly")
	s = e.snapshot(t, "nightly")
	assert.Equal(t, novacronv1.SnapshotFailed, s.Status.Phase)
	assert.Equal(t, novacronv1.ReasonSnapshotFailed, readyCondition(s.Status.Conditions).Reason)
	assert.Contains(t, readyCondition(s.Status.Conditions).Message, "gave up after 3 tries: disk busy")
	assert.Equal(t, 3, e.host.Calls()["CreateSnapshot"], "no try after giving up")
	run(t, r, "nightly")
	assert.Equal(t, 3, e.host.Calls()["CreateSnapshot"])
}

// No snapshot while the VM migrates, or while another of its snapshots is
// being taken: it waits, saying why.
func TestASnapshotWaitsForAMigrationAndForAnotherSnapshot(t *testing.T) {
	e := newEnv(t)
	r := e.snapshots()
	m := &novacronv1.VirtualMachineMigration{ObjectMeta: metav1.ObjectMeta{Name: "move", Namespace: ns}, Spec: novacronv1.VirtualMachineMigrationSpec{VMName: "web"}}
	require.NoError(t, e.Client.Create(t.Context(), m))
	s := e.take(t, r, "one")
	assert.Equal(t, novacronv1.SnapshotPending, s.Status.Phase)
	assert.Contains(t, readyCondition(s.Status.Conditions).Message, "migration move of VirtualMachine web is under way")
	assert.Zero(t, e.host.Calls()["CreateSnapshot"])
	require.NoError(t, e.Client.Delete(t.Context(), m))

	other := &novacronv1.VirtualMachineSnapshot{ObjectMeta: metav1.ObjectMeta{Name: "two", Namespace: ns, Labels: map[string]string{novacronv1.LabelVM: "web"}},
		Spec: novacronv1.VirtualMachineSnapshotSpec{VMName: "web"}}
	require.NoError(t, e.Client.Create(t.Context(), other))
	other.Status.Phase = novacronv1.SnapshotInProgress
	require.NoError(t, e.Client.Status().Update(t.Context(), other))
	run(t, r, "one")
	assert.Contains(t, readyCondition(e.snapshot(t, "one").Status.Conditions).Message, "snapshot two of VirtualMachine web is in progress")
	assert.Zero(t, e.host.Calls()["CreateSnapshot"])
}

// A quiesced snapshot that fails (its call given up on, or its connection
// lost) thaws the guest at once rather than leaving it frozen until the next
// try; one without quiesce asks nothing.
func TestAFailedQuiescedSnapshotThawsTheGuest(t *testing.T) {
	for _, quiesce := range []bool{false, true} {
		e := newEnv(t)
		r := e.snapshots()
		require.NoError(t, e.Client.Create(t.Context(), &novacronv1.VirtualMachineSnapshot{ObjectMeta: metav1.ObjectMeta{Name: "nightly", Namespace: ns},
			Spec: novacronv1.VirtualMachineSnapshotSpec{VMName: "web", Quiesce: quiesce}}))
		run(t, r, "nightly")
		e.host.FailNext("CreateSnapshot", errors.New("libvirt call abandoned: context deadline exceeded"))
		run(t, r, "nightly")
		require.Equal(t, int32(1), e.snapshot(t, "nightly").Status.FailedAttempts)
		want := 0
		if quiesce {
			want = 1
		}
		assert.Equal(t, want, e.host.Calls()["Thaw"], "quiesce %t", quiesce)
	}
}
