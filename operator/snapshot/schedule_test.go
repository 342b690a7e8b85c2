package snapshot

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

func (e *env) scheduled(t *testing.T) []string {
	t.Helper()
	var list novacronv1.VirtualMachineSnapshotList
	require.NoError(t, e.Client.List(t.Context(), &list, client.MatchingLabels{novacronv1.LabelSnapshotScheduled: "true"}))
	var names []string
	for _, s := range sortBySlot(list.Items) {
		names = append(names, s.Name)
	}
	return names
}

func (e *env) markReady(t *testing.T, name string) {
	t.Helper()
	s := e.snapshot(t, name)
	s.Status.Phase, s.Status.ReadyToUse = novacronv1.SnapshotReady, true
	require.NoError(t, e.Client.Status().Update(t.Context(), s))
}

// Each slot gets one snapshot named after it; after downtime only the latest
// missed slot is taken; the newest `retention` scheduled snapshots stay.
func TestScheduledSnapshotsCatchUpOnceAndKeepTheRetention(t *testing.T) {
	e := newEnv(t)
	v := e.web(t)
	v.CreationTimestamp = metav1.NewTime(e.clock.Now().Add(-90 * time.Minute))
	v.Spec.SnapshotPolicy = &novacronv1.SnapshotPolicy{Schedule: "0 * * * *", Retention: 2}
	require.NoError(t, e.Client.Update(t.Context(), v))
	r := &ScheduleReconciler{Client: e.Client, Recorder: e.Events, Clock: e.clock, Resync: time.Minute}

	// The VM exists since 07:30: of the slots 08:00 and 09:00 only the
	// latest is taken.
	run(t, r, "web")
	assert.Equal(t, []string{"web-20261201-0900"}, e.scheduled(t), "only the latest slot, once")
	run(t, r, "web")
	assert.Len(t, e.scheduled(t), 1, "a slot is taken once")

	// Three hours of downtime: one catch-up snapshot, for the latest slot,
	// after the previous one is done.
	e.clock.Step(3*time.Hour + time.Minute)
	run(t, r, "web")
	assert.Len(t, e.scheduled(t), 1, "the slot waits for the unfinished snapshot")
	e.markReady(t, "web-20261201-0900")
	run(t, r, "web")
	assert.Equal(t, []string{"web-20261201-1200", "web-20261201-0900"}, e.scheduled(t))

	e.markReady(t, "web-20261201-1200")
	e.clock.Step(time.Hour)
	run(t, r, "web")
	e.markReady(t, "web-20261201-1300")
	run(t, r, "web")
	assert.Equal(t, []string{"web-20261201-1300", "web-20261201-1200"}, e.scheduled(t), "retention 2: the oldest goes")
	err := e.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "web-20261201-0900"}, &novacronv1.VirtualMachineSnapshot{})
	assert.True(t, apierrors.IsNotFound(err))
	st := e.web(t).Status.Snapshot
	require.NotNil(t, st)
	assert.Equal(t, novacronv1.ScheduleResultSucceeded, st.LastResult)
	assert.Equal(t, time.Date(2026, 12, 1, 14, 0, 0, 0, time.UTC), st.NextScheduleTime.UTC())
}

// A status write lost after the slot's snapshot was made (a conflict, a
// crash) is redone once that snapshot has finished, when no event of it is
// left to come: the pass that records the slot must be followed by one that
// reports it and prunes.
func TestASlotRecordedAfterItsSnapshotFinishedIsReportedAndPruned(t *testing.T) {
	e := newEnv(t)
	v := e.web(t)
	v.CreationTimestamp = metav1.NewTime(e.clock.Now().Add(-90 * time.Minute))
	v.Spec.SnapshotPolicy = &novacronv1.SnapshotPolicy{Schedule: "0 * * * *", Retention: 1}
	require.NoError(t, e.Client.Update(t.Context(), v))
	r := &ScheduleReconciler{Client: e.Client, Recorder: e.Events, Clock: e.clock, Resync: time.Minute}
	run(t, r, "web")
	e.markReady(t, "web-20261201-0900")
	run(t, r, "web")

	// The 10:00 snapshot is made and finishes, but the VM's status still
	// names the 09:00 slot.
	e.clock.Step(time.Hour)
	before := e.web(t).DeepCopy()
	run(t, r, "web")
	e.markReady(t, "web-20261201-1000")
	lost := e.web(t)
	lost.Status.Snapshot = before.Status.Snapshot
	require.NoError(t, e.Client.Status().Update(t.Context(), lost))

	res := run(t, r, "web")
	assert.Positive(t, res.RequeueAfter, "nothing else brings the VM back")
	run(t, r, "web")
	assert.Equal(t, []string{"web-20261201-1000"}, e.scheduled(t), "retention 1 applied")
	st := e.web(t).Status.Snapshot
	assert.Equal(t, novacronv1.ScheduleResultSucceeded, st.LastResult)
	assert.Equal(t, "web-20261201-1000", st.LastSnapshotName)
	assert.Equal(t, time.Date(2026, 12, 1, 11, 0, 0, 0, time.UTC), st.NextScheduleTime.UTC())
}
