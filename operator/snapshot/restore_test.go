package snapshot

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/provider"
)

func (e *env) restores() *RestoreReconciler {
	return &RestoreReconciler{Client: e.Client, Recorder: e.Events, Hypervisors: e.Hosts, Clock: e.clock}
}

func (e *env) restore(t *testing.T, name string, stopVM bool) {
	t.Helper()
	require.NoError(t, e.Client.Create(t.Context(), &novacronv1.VirtualMachineRestore{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: novacronv1.VirtualMachineRestoreSpec{VMName: "web", SnapshotName: "good", StopVM: stopVM}}))
}

func (e *env) restoreStatus(t *testing.T, name string) novacronv1.VirtualMachineRestoreStatus {
	t.Helper()
	rs := &novacronv1.VirtualMachineRestore{}
	require.NoError(t, e.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, rs))
	return rs.Status
}

func (e *env) web(t *testing.T) *novacronv1.VirtualMachine {
	t.Helper()
	v := &novacronv1.VirtualMachine{}
	require.NoError(t, e.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "web"}, v))
	return v
}

func TestARunningVMIsRestoredOnlyWhenTheRestoreMayStopIt(t *testing.T) {
	e := newEnv(t)
	e.take(t, e.snapshots(), "good")
	r := e.restores()

	e.restore(t, "refused", false)
	run(t, r, "refused")
	st := e.restoreStatus(t, "refused")
	assert.Equal(t, novacronv1.RestoreFailed, st.Phase)
	assert.Equal(t, novacronv1.ReasonVMRunning, readyCondition(st.Conditions).Reason)
	assert.Contains(t, readyCondition(st.Conditions).Message, "spec.stopVM: true")

	// stopVM: recorded first, then the VM is asked to stop; the restore
	// waits for it.
	e.restore(t, "rollback", true)
	run(t, r, "rollback")
	st = e.restoreStatus(t, "rollback")
	assert.True(t, meta.IsStatusConditionTrue(st.Conditions, novacronv1.RestoreConditionStoppedVM))
	assert.Equal(t, novacronv1.RestorePending, st.Phase)
	assert.False(t, *e.web(t).Spec.Running)
	assert.Zero(t, e.host.Calls()["RevertSnapshot"], "nothing reverted under a running guest")

	// The VM controller stopped it: reverted (resuming from the memory
	// state), started again, given back.
	v := e.web(t)
	v.Status.Phase = novacronv1.VMStopped
	require.NoError(t, e.Client.Status().Update(t.Context(), v))
	require.NoError(t, e.host.Shutdown(t.Context(), "team_web", 0))
	run(t, r, "rollback")
	run(t, r, "rollback")
	st = e.restoreStatus(t, "rollback")
	assert.Equal(t, novacronv1.RestoreSucceeded, st.Phase)
	assert.Contains(t, readyCondition(st.Conditions).Message, "and started again")
	v = e.web(t)
	assert.True(t, *v.Spec.Running)
	assert.NotContains(t, v.Annotations, novacronv1.AnnotationRestoring, "the VM is given back")
	_, state, _ := e.host.Domain("team_web")
	assert.Equal(t, provider.StateRunning, state, "resumed from the snapshot's memory state")
	assert.Equal(t, 1, e.host.Calls()["RevertSnapshot"])
}

// While a restore reverts the domain, the VM carries the guard that keeps the
// VM controller away; a second restore of the same VM waits for the first.
func TestOneRestoreAtATimeHoldsTheVM(t *testing.T) {
	e := newEnv(t)
	e.take(t, e.snapshots(), "good")
	v := e.web(t)
	v.Spec.Running = new(bool)
	v.Annotations = map[string]string{novacronv1.AnnotationRestoring: "first"}
	require.NoError(t, e.Client.Update(t.Context(), v))
	require.NoError(t, e.Client.Create(t.Context(), &novacronv1.VirtualMachineRestore{ObjectMeta: metav1.ObjectMeta{Name: "first", Namespace: ns},
		Spec: novacronv1.VirtualMachineRestoreSpec{VMName: "web", SnapshotName: "good"}}))
	e.restore(t, "second", false)
	run(t, e.restores(), "second")
	st := e.restoreStatus(t, "second")
	assert.Equal(t, novacronv1.RestorePending, st.Phase)
	assert.Contains(t, readyCondition(st.Conditions).Message, "restore first of VirtualMachine web is under way")
	assert.Zero(t, e.host.Calls()["RevertSnapshot"])
}

// A failed snapshot whose status says nothing of why (written by hand or by
// an older operator) fails the restore with that said, not the controller.
func TestARestoreFromAFailedSnapshotWithoutAReasonFails(t *testing.T) {
	e := newEnv(t)
	s := e.take(t, e.snapshots(), "good")
	s.Status.Phase, s.Status.ReadyToUse, s.Status.Conditions = novacronv1.SnapshotFailed, false, nil
	require.NoError(t, e.Client.Status().Update(t.Context(), s))
	e.restore(t, "from-failed", true)
	run(t, e.restores(), "from-failed")
	st := e.restoreStatus(t, "from-failed")
	assert.Equal(t, novacronv1.RestoreFailed, st.Phase)
	assert.Equal(t, "snapshot good failed: no reason recorded", readyCondition(st.Conditions).Message)
}
