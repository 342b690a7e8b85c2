package livemigration

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/provider"
)

// A restarted operator finds the guest still on the source and no job
// there: the migration is rolled back, the target's copy and pod removed.
func TestResolveRollsBackAGuestStillOnTheSource(t *testing.T) {
	e := newEnv(t)
	e.inFlight(t)
	e.targetCopy(t, provider.StateShutoff)
	e.reconcile(t, "move")

	m := e.get(t, "move")
	assert.Equal(t, novacronv1.MigrationFailed, m.Status.Phase)
	assert.Equal(t, novacronv1.ReasonInterrupted, ready(m).Reason)
	_, st, _ := e.src.Domain(e.domainName)
	assert.Equal(t, provider.StateRunning, st, "the VM runs on, on the source")
	_, _, onTarget := e.tgt.Domain(e.domainName)
	assert.False(t, onTarget, "the unfinished copy is gone")
	assert.False(t, e.tgt.HasVolume("default", e.domainName+"-uid-web-root.qcow2"), "and its disks")
	err := e.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: m.Status.TargetPod}, &corev1.Pod{})
	assert.True(t, apierrors.IsNotFound(err), "the target pod is deleted")
	v := e.vm(t, "web")
	assert.Nil(t, v.Status.MigrationState, "the VM is given back")
	assert.Equal(t, "node-1", v.Status.NodeName)
	assert.Equal(t, novacronv1.VMRunning, v.Status.Phase)
}

// A guest that already switched over (gone from the source, running on the
// target) is finished on the target, never rolled back onto a second node.
func TestResolveFinishesAGuestThatSwitchedOver(t *testing.T) {
	e := newEnv(t)
	e.inFlight(t)
	require.NoError(t, e.src.Undefine(t.Context(), e.domainName))
	e.targetCopy(t, provider.StateRunning)
	e.reconcile(t, "move")

	m := e.get(t, "move")
	assert.Equal(t, novacronv1.MigrationSucceeded, m.Status.Phase)
	assert.True(t, meta.IsStatusConditionTrue(m.Status.Conditions, novacronv1.MigrationConditionSourceCleaned))
	v := e.vm(t, "web")
	assert.Equal(t, "node-2", v.Status.NodeName)
	assert.Equal(t, m.Status.TargetPod, v.Status.LauncherPod)
	assert.Nil(t, v.Status.MigrationState)
	_, st, _ := e.tgt.Domain(e.domainName)
	assert.Equal(t, provider.StateRunning, st)
	err := e.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "web-launcher"}, &corev1.Pod{})
	assert.True(t, apierrors.IsNotFound(err), "the source pod is deleted")
}

// A paused source may mean the guest switched over; while the target cannot
// say, the migration waits rather than guess.
func TestAPausedSourceWithATargetThatCannotBeReachedIsWaitedFor(t *testing.T) {
	e := newEnv(t)
	e.inFlight(t)
	e.src.SetState(e.domainName, provider.StatePaused)
	e.targetCopy(t, provider.StateRunning)
	e.tgt.SetDown(true)
	res := e.reconcile(t, "move")

	m := e.get(t, "move")
	assert.Equal(t, novacronv1.MigrationRunning, m.Status.Phase)
	assert.Equal(t, novacronv1.ReasonWaitingForTarget, ready(m).Reason)
	assert.Contains(t, ready(m).Message, "paused on node node-1")
	assert.Positive(t, res.RequeueAfter)
	_, _, onSource := e.src.Domain(e.domainName)
	assert.True(t, onSource, "nothing is removed while it is unknown where the guest runs")

	e.tgt.SetDown(false)
	e.reconcile(t, "move")
	assert.Equal(t, novacronv1.MigrationSucceeded, e.get(t, "move").Status.Phase)
	_, _, onSource = e.src.Domain(e.domainName)
	assert.False(t, onSource, "the paused source copy is removed once the target runs the guest")
}

// While the source's daemon still drives the migration, a restarted operator
// follows it instead of rolling back.
func TestResolveFollowsAJobStillRunningOnTheSource(t *testing.T) {
	e := newEnv(t)
	e.inFlight(t)
	release := e.src.HoldMigrations()
	done := make(chan error, 1)
	go func() {
		done <- e.src.Migrate(context.Background(), e.domainName, provider.MigrateOptions{DestURI: "fake://node-2"})
	}()
	require.Eventually(t, func() bool {
		p, err := e.src.MigrationProgress(t.Context(), e.domainName)
		return err == nil && p.DataTotal > 0
	}, 5e9, 1e6, "the source's job is running")

	e.reconcile(t, "move")
	m := e.get(t, "move")
	assert.Equal(t, novacronv1.MigrationRunning, m.Status.Phase)
	require.NotNil(t, m.Status.Progress)
	assert.Positive(t, m.Status.Progress.DataTotalBytes)

	release()
	require.NoError(t, <-done)
	e.reconcile(t, "move")
	assert.Equal(t, novacronv1.MigrationSucceeded, e.get(t, "move").Status.Phase, "the job finished: the guest is on the target")
	assert.Equal(t, "node-2", e.vm(t, "web").Status.NodeName)
}

// Cancelling a migration whose job runs aborts it: the VM stays on the
// source and the migration is Cancelled.
func TestCancelAbortsTheJob(t *testing.T) {
	e := newEnv(t)
	release := e.src.HoldMigrations()
	t.Cleanup(release)
	e.migration(t, "move", novacronv1.VirtualMachineMigrationSpec{VMName: "web"})
	e.reconcile(t, "move") // finalizer
	e.reconcile(t, "move") // target pod
	bindTarget(t, e, "node-2")
	e.reconcile(t, "move") // job started, held
	require.NotNil(t, e.r.jobs.get(e.get(t, "move").UID))

	m := e.get(t, "move")
	m.Spec.Cancel = true
	require.NoError(t, e.Client.Update(t.Context(), m))
	e.reconcile(t, "move")
	m = e.get(t, "move")
	assert.Equal(t, novacronv1.MigrationCancelled, m.Status.Phase)
	assert.Nil(t, e.r.jobs.get(m.UID), "the job is gone")
	_, st, _ := e.src.Domain(e.domainName)
	assert.Equal(t, provider.StateRunning, st)
	_, _, onTarget := e.tgt.Domain(e.domainName)
	assert.False(t, onTarget)
	assert.Equal(t, "node-1", e.vm(t, "web").Status.NodeName)
}
