package livemigration

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/fakecluster"
	"github.com/novacron/operator/operator/provider"
)

func TestMigrateOptionsFromThePolicy(t *testing.T) {
	tgt := &novacronv1.Hypervisor{Spec: novacronv1.HypervisorSpec{URI: "qemu:///system?socket=/run/x", MigrationURI: "qemu+tls://node-2/system"}}
	v := &novacronv1.VirtualMachine{Spec: novacronv1.VirtualMachineSpec{MigrationPolicy: &novacronv1.MigrationPolicy{
		AllowLiveMigration: true, Compression: true, Encrypted: true, Bandwidth: "10Gbps"}}}
	o, err := migrateOptions(v, tgt)
	require.NoError(t, err)
	assert.Equal(t, "qemu+tls://node-2/system", o.DestURI, "the address peers use, not the operator's")
	assert.True(t, o.Compressed)
	assert.True(t, o.Encrypted)
	assert.True(t, o.CopyStorage)
	assert.Equal(t, uint64(1192), o.BandwidthMiBps, "10 Gbit/s is 1192 MiB/s")

	v.Spec.MigrationPolicy.Bandwidth = "8Mbps"
	o, err = migrateOptions(v, tgt)
	require.NoError(t, err)
	assert.Equal(t, uint64(1), o.BandwidthMiBps, "never 0, which would mean no limit")

	tgt.Spec.MigrationURI = ""
	v.Spec.MigrationPolicy.Bandwidth = "fast"
	_, err = migrateOptions(v, tgt)
	require.ErrorContains(t, err, "spec.migrationPolicy.bandwidth")
	v.Spec.MigrationPolicy = nil
	o, err = migrateOptions(v, tgt)
	require.NoError(t, err)
	assert.Equal(t, tgt.Spec.URI, o.DestURI)
	assert.Zero(t, o.BandwidthMiBps)
}

// bindTarget does the scheduler's part for the migration "move".
func bindTarget(t *testing.T, e *env, node string) {
	t.Helper()
	pod := &corev1.Pod{}
	require.NoError(t, e.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: e.get(t, "move").Status.TargetPod}, pod))
	pod.Spec.NodeName = node
	require.NoError(t, e.Client.Update(t.Context(), pod))
}

func TestAMigrationMovesTheVMPhaseByPhase(t *testing.T) {
	e := newEnv(t)
	e.migration(t, "move", novacronv1.VirtualMachineMigrationSpec{VMName: "web"})
	e.reconcile(t, "move")

	// Scheduling: recorded, the VM claimed, a target pod for the scheduler
	// that may not land on the source.
	e.reconcile(t, "move")
	m := e.get(t, "move")
	assert.Equal(t, novacronv1.MigrationScheduling, m.Status.Phase)
	assert.Equal(t, "node-1", m.Status.SourceNode)
	assert.Equal(t, "move", e.vm(t, "web").Status.MigrationState.MigrationName)
	pod := &corev1.Pod{}
	require.NoError(t, e.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: m.Status.TargetPod}, pod))
	assert.Equal(t, "node-1", pod.Labels[novacronv1.LabelMigrationSource])
	assert.Equal(t, "move", pod.Labels[novacronv1.LabelMigration])

	// Placed: disks made on the target, Running recorded before the call.
	bindTarget(t, e, "node-2")
	e.reconcile(t, "move")
	m = e.get(t, "move")
	assert.Equal(t, novacronv1.MigrationRunning, m.Status.Phase)
	assert.Equal(t, "node-2", m.Status.TargetNode)
	assert.True(t, e.tgt.HasVolume("default", "team_web-uid-web-root.qcow2"), "the root disk is made on the target first")
	j := e.r.jobs.get(m.UID)
	require.NotNil(t, j)
	<-j.done

	// The call returned: the VM is handed over, the source cleaned.
	e.reconcile(t, "move")
	m = e.get(t, "move")
	assert.Equal(t, novacronv1.MigrationSucceeded, m.Status.Phase)
	assert.Contains(t, ready(m).Message, "downtime")
	assert.True(t, meta.IsStatusConditionTrue(m.Status.Conditions, novacronv1.MigrationConditionSourceCleaned))
	v := e.vm(t, "web")
	assert.Equal(t, "node-2", v.Status.NodeName)
	assert.Equal(t, novacronv1.VMRunning, v.Status.Phase)
	assert.Nil(t, v.Status.MigrationState)
	assert.False(t, e.src.HasVolume("default", "team_web-uid-web-root.qcow2"))
	events := e.EventsSeen()
	for _, reason := range []string{novacronv1.ReasonScheduling, novacronv1.ReasonTargetReady, novacronv1.ReasonMigrating, novacronv1.ReasonSucceeded, novacronv1.ReasonMigrationSucceeded} {
		assert.True(t, fakecluster.HasEvent(events, corev1.EventTypeNormal, reason, ""), reason)
	}
}

// A failed call leaves the VM where it was and removes the target's disks.
func TestAFailedCallRollsBackOntoTheSource(t *testing.T) {
	e := newEnv(t)
	e.src.FailNext("Migrate", errors.New("unable to connect to server"))
	e.migration(t, "move", novacronv1.VirtualMachineMigrationSpec{VMName: "web"})
	e.reconcile(t, "move")
	e.reconcile(t, "move")
	bindTarget(t, e, "node-2")
	e.reconcile(t, "move")
	<-e.r.jobs.get(e.get(t, "move").UID).done
	e.reconcile(t, "move")

	m := e.get(t, "move")
	assert.Equal(t, novacronv1.MigrationFailed, m.Status.Phase)
	assert.Equal(t, novacronv1.ReasonMigrationFailed, ready(m).Reason)
	assert.Contains(t, ready(m).Message, "unable to connect")
	assert.False(t, e.tgt.HasVolume("default", "team_web-uid-web-root.qcow2"))
	assert.Equal(t, "node-1", e.vm(t, "web").Status.NodeName)
}

// What cannot move fails at once, saying why; what may move later waits.
func TestBlockersFailAndLimitsWait(t *testing.T) {
	e := newEnv(t)
	v := e.vm(t, "web")
	v.Spec.MigrationPolicy.AllowLiveMigration = false
	require.NoError(t, e.Client.Update(t.Context(), v))
	e.migration(t, "move", novacronv1.VirtualMachineMigrationSpec{VMName: "web"})
	e.reconcile(t, "move")
	e.reconcile(t, "move")
	m := e.get(t, "move")
	assert.Equal(t, novacronv1.MigrationFailed, m.Status.Phase)
	assert.Equal(t, novacronv1.ReasonNotMigratable, ready(m).Reason)
	assert.Contains(t, ready(m).Message, "allowLiveMigration")

	// One leaving node-1 at a time: the second waits, Pending.
	e.r.Limits.MaxOutbound = 1
	e.runningVM(t, "db", "node-1")
	e.runningVM(t, "cache", "node-1")
	for _, name := range []string{"db", "cache"} {
		e.migration(t, name+"-move", novacronv1.VirtualMachineMigrationSpec{VMName: name})
		e.reconcile(t, name+"-move")
		e.reconcile(t, name+"-move")
	}
	assert.Equal(t, novacronv1.MigrationScheduling, e.get(t, "db-move").Status.Phase)
	second := e.get(t, "cache-move")
	assert.Equal(t, novacronv1.MigrationPending, second.Status.Phase)
	assert.Equal(t, novacronv1.ReasonWaiting, ready(second).Reason)
	assert.Contains(t, ready(second).Message, "leaving node node-1")
}

// A migration no node can take gives its slot back after the scheduling
// timeout: Failed, its target pod gone, the VM where it was.
func TestAMigrationWithoutATargetTimesOut(t *testing.T) {
	e := newEnv(t)
	e.migration(t, "move", novacronv1.VirtualMachineMigrationSpec{VMName: "web"})
	e.reconcile(t, "move")
	e.reconcile(t, "move")
	m := e.get(t, "move")
	require.Equal(t, novacronv1.MigrationScheduling, m.Status.Phase)
	require.NotNil(t, m.Status.SchedulingStartTime)
	e.reconcile(t, "move")
	require.Equal(t, novacronv1.MigrationScheduling, e.get(t, "move").Status.Phase, "within the timeout it waits")

	m.Status.SchedulingStartTime = ptr.To(metav1.NewTime(time.Now().Add(-e.r.Limits.SchedulingTimeout)))
	require.NoError(t, e.Client.Status().Update(t.Context(), m))
	e.reconcile(t, "move")
	m = e.get(t, "move")
	assert.Equal(t, novacronv1.MigrationFailed, m.Status.Phase)
	assert.Equal(t, novacronv1.ReasonSchedulingTimeout, ready(m).Reason)
	assert.Contains(t, ready(m).Message, "5m0s")
	err := e.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: m.Status.TargetPod}, &corev1.Pod{})
	assert.True(t, apierrors.IsNotFound(err), "target pod deleted: %v", err)
	v := e.vm(t, "web")
	assert.Nil(t, v.Status.MigrationState)
	assert.Equal(t, "node-1", v.Status.NodeName)
}

// A VM from before UID volume naming moves with its disks' old names: the
// target's disk is made under the name the source's domain uses, and the VM
// records it.
func TestAVMFromBeforeUIDNamingMovesUnderItsDisksNames(t *testing.T) {
	e := newEnv(t)
	e.src.AddVolume("default", "team_web-root.qcow2")
	e.migration(t, "move", novacronv1.VirtualMachineMigrationSpec{VMName: "web"})
	e.reconcile(t, "move")
	e.reconcile(t, "move")
	bindTarget(t, e, "node-2")
	e.reconcile(t, "move")
	require.Equal(t, novacronv1.MigrationRunning, e.get(t, "move").Status.Phase)
	assert.True(t, e.vm(t, "web").Status.LegacyVolumeNames)
	assert.True(t, e.tgt.HasVolume("default", "team_web-root.qcow2"))
	assert.False(t, e.tgt.HasVolume("default", "team_web-uid-web-root.qcow2"))
}

// listCounter counts the lists made through it (the API server, uncached).
type listCounter struct {
	client.Reader
	lists int
}

func (c *listCounter) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	c.lists++
	return c.Reader.List(ctx, list, opts...)
}

// A migration waiting for a slot asks the cache every poll; only once the
// cache shows a free slot is it confirmed with the API server, so a queue of
// waiting migrations costs the API server nothing.
func TestAWaitingMigrationListsFromTheCache(t *testing.T) {
	e := newEnv(t)
	api := &listCounter{Reader: e.r.APIReader}
	e.r.APIReader = api
	e.r.Limits.MaxOutbound = 1
	e.migration(t, "move", novacronv1.VirtualMachineMigrationSpec{VMName: "web"})
	e.reconcile(t, "move")
	e.reconcile(t, "move")
	require.Equal(t, novacronv1.MigrationScheduling, e.get(t, "move").Status.Phase)
	assert.Equal(t, 1, api.lists, "the free slot confirmed once")

	e.runningVM(t, "db", "node-1")
	e.migration(t, "db-move", novacronv1.VirtualMachineMigrationSpec{VMName: "db"})
	e.reconcile(t, "db-move")
	for range 5 {
		e.reconcile(t, "db-move")
	}
	assert.Equal(t, novacronv1.MigrationPending, e.get(t, "db-move").Status.Phase)
	assert.Equal(t, 1, api.lists, "waiting asked only the cache")
}

// Cleaning a node after a migration leaves another VM's same-named domain
// (say an earlier VM's, left while the node was away) and the disks it may
// use; only this VM's own, UID-named disks go.
func TestCleaningANodeLeavesAnotherVMsDomain(t *testing.T) {
	e := newEnv(t)
	v := e.vm(t, "web")
	require.NoError(t, e.tgt.Define(t.Context(), provider.Domain{Name: "team_web", UUID: "uid-earlier"}))
	e.tgt.AddVolume("default", "team_web-uid-web-root.qcow2")
	tgtObj := &novacronv1.Hypervisor{}
	require.NoError(t, e.Client.Get(t.Context(), client.ObjectKey{Name: "node-2"}, tgtObj))
	require.NoError(t, removeDomain(t.Context(), tgtObj, e.tgt, v))
	d, _, ok := e.tgt.Domain("team_web")
	require.True(t, ok, "not this VM's to remove")
	assert.Equal(t, "uid-earlier", d.UUID)
	assert.False(t, e.tgt.HasVolume("default", "team_web-uid-web-root.qcow2"), "this VM's own disk goes")
}
