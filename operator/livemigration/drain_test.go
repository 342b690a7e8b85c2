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
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/fakecluster"
)

func (e *env) drainer() *DrainReconciler {
	return &DrainReconciler{Client: e.Client, Recorder: e.Events, Launcher: e.r.Launcher, Resync: time.Second}
}

func (e *env) drain(t *testing.T, d *DrainReconciler, node string) *novacronv1.Hypervisor {
	t.Helper()
	fakecluster.Reconcile(t, d, "", node)
	hv := &novacronv1.Hypervisor{}
	require.NoError(t, e.Client.Get(t.Context(), client.ObjectKey{Name: node}, hv))
	return hv
}

func (e *env) cordon(t *testing.T, node string) {
	t.Helper()
	n := &corev1.Node{}
	require.NoError(t, e.Client.Get(t.Context(), client.ObjectKey{Name: node}, n))
	n.Spec.Unschedulable = true
	require.NoError(t, e.Client.Update(t.Context(), n))
}

func TestDrainMigratesWhatCanMoveAndListsWhatCannot(t *testing.T) {
	e := newEnv(t)
	stuck := e.runningVM(t, "stuck", "node-1")
	stuck.Spec.MigrationPolicy.AllowLiveMigration = false
	require.NoError(t, e.Client.Update(t.Context(), stuck))
	d := e.drainer()

	hv := e.drain(t, d, "node-1")
	assert.Nil(t, hv.Status.Evacuation, "nothing happens to a node that is not drained")

	e.cordon(t, "node-1")
	hv = e.drain(t, d, "node-1")
	require.NotNil(t, hv.Status.Evacuation)
	assert.Equal(t, novacronv1.EvacuationCordoned, hv.Status.Evacuation.Reason)
	assert.Equal(t, []string{"team/web"}, hv.Status.Evacuation.Migrating)
	require.Len(t, hv.Status.Evacuation.Blocked, 1)
	assert.Equal(t, "team/stuck", hv.Status.Evacuation.Blocked[0].VM)
	assert.Contains(t, hv.Status.Evacuation.Blocked[0].Blocker, "does not allow live migration")
	m := e.get(t, "web-drain-node-1")
	assert.Equal(t, novacronv1.MigrationDrain, m.Spec.Reason)
	assert.Equal(t, "node-1", m.Labels[novacronv1.LabelDrain])
	events := e.EventsSeen()
	assert.True(t, fakecluster.HasEvent(events, corev1.EventTypeWarning, novacronv1.ReasonEvacuationBlocked, "team/stuck"))
	assert.True(t, fakecluster.HasEvent(events, corev1.EventTypeNormal, novacronv1.ReasonEvacuating, "node-1"))

	// Looking again neither duplicates the migration nor the warning.
	e.drain(t, d, "node-1")
	assert.False(t, fakecluster.HasEvent(e.EventsSeen(), corev1.EventTypeWarning, novacronv1.ReasonEvacuationBlocked, ""))

	// A drain migration that failed is not retried blindly.
	m.Status.Phase = novacronv1.MigrationFailed
	m.Status.Conditions = []metav1.Condition{{Type: novacronv1.ConditionReady, Status: metav1.ConditionFalse, Reason: novacronv1.ReasonMigrationFailed,
		Message: "target lost", LastTransitionTime: metav1.Now()}}
	require.NoError(t, e.Client.Status().Update(t.Context(), m))
	hv = e.drain(t, d, "node-1")
	require.Len(t, hv.Status.Evacuation.Blocked, 2)
	assert.Contains(t, hv.Status.Evacuation.Blocked[1].Blocker, "its drain migration web-drain-node-1 failed (target lost); delete it to try again")
}

// The dry run estimates targets on the scheduler's capacity model: the VM's
// size against the Hypervisor's overcommitted capacity, and its launcher
// pod, QEMU's overhead included, against the Node.
func TestThePlanEstimatesTargetsAsTheSchedulerCounts(t *testing.T) {
	e := newEnv(t)
	// node-2 takes 8Gi of guest memory (2:1 overcommit), but its Node has
	// 4Gi: a 4Gi VM's pod (4Gi plus QEMU's overhead) does not fit there.
	hv2 := &novacronv1.Hypervisor{}
	require.NoError(t, e.Client.Get(t.Context(), client.ObjectKey{Name: "node-2"}, hv2))
	hv2.Spec.Overcommit.Memory = resource.NewQuantity(2, resource.DecimalSI)
	require.NoError(t, e.Client.Update(t.Context(), hv2))
	hv2.Status.Capacity[corev1.ResourceMemory] = resource.MustParse("4Gi")
	require.NoError(t, e.Client.Status().Update(t.Context(), hv2))
	n2 := &corev1.Node{}
	require.NoError(t, e.Client.Get(t.Context(), client.ObjectKey{Name: "node-2"}, n2))
	n2.Status.Allocatable[corev1.ResourceMemory] = resource.MustParse("4Gi")
	require.NoError(t, e.Client.Status().Update(t.Context(), n2))
	d := e.drainer()

	hv := e.plan(t, d, "1")
	require.Len(t, hv.Status.EvacuationPlan.VMs, 1)
	assert.Empty(t, hv.Status.EvacuationPlan.VMs[0].Target)
	assert.Contains(t, hv.Status.EvacuationPlan.VMs[0].Blocker, `no other node with CPU model "Icelake-Server" has 2 vCPUs and 4Gi free`)

	// Of two nodes with room, the one with the most free vCPUs; a node of
	// another CPU model is never a target.
	e.Node(t, "node-3", 8, "64Gi")
	e.Node(t, "node-4", 32, "64Gi")
	_, big := e.Node(t, "other-model", 64, "256Gi")
	big.Status.CPUModel = "EPYC"
	require.NoError(t, e.Client.Status().Update(t.Context(), big))
	hv = e.plan(t, d, "2")
	assert.Equal(t, "node-4", hv.Status.EvacuationPlan.VMs[0].Target)
	assert.Equal(t, "2", hv.Status.EvacuationPlan.Request)
	assert.Empty(t, e.vm(t, "web").Status.MigrationState, "a dry run moves nothing")
}

// plan asks node-1 for a dry run (request) and returns its answer.
func (e *env) plan(t *testing.T, d *DrainReconciler, request string) *novacronv1.Hypervisor {
	t.Helper()
	hv := &novacronv1.Hypervisor{}
	require.NoError(t, e.Client.Get(t.Context(), client.ObjectKey{Name: "node-1"}, hv))
	hv.Annotations = map[string]string{novacronv1.AnnotationEvacuationPlan: request}
	require.NoError(t, e.Client.Update(t.Context(), hv))
	hv = e.drain(t, d, "node-1")
	require.NotNil(t, hv.Status.EvacuationPlan)
	return hv
}

// A VM whose drain migration is refused (here by a migration policy) is
// listed as blocked, with why; the VMs after it still leave.
func TestOneRefusedDrainMigrationDoesNotHoldTheOthers(t *testing.T) {
	e := newEnv(t)
	e.runningVM(t, "another", "node-1") // sorted before web
	e.cordon(t, "node-1")
	refuse := func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
		if m, ok := obj.(*novacronv1.VirtualMachineMigration); ok && m.Spec.VMName == "another" {
			return apierrors.NewForbidden(novacronv1.GroupVersion.WithResource("virtualmachinemigrations").GroupResource(), m.Name, errors.New("policy pinned: this VM stays"))
		}
		return c.Create(ctx, obj, opts...)
	}
	d := e.drainer()
	d.Client = interceptor.NewClient(e.Client.(client.WithWatch), interceptor.Funcs{Create: refuse})

	hv := e.drain(t, d, "node-1")
	require.NotNil(t, hv.Status.Evacuation)
	assert.Equal(t, []string{"team/web"}, hv.Status.Evacuation.Migrating)
	require.Len(t, hv.Status.Evacuation.Blocked, 1)
	assert.Equal(t, "team/another", hv.Status.Evacuation.Blocked[0].VM)
	assert.Contains(t, hv.Status.Evacuation.Blocked[0].Blocker, "policy pinned: this VM stays")
	e.get(t, "web-drain-node-1")
}
