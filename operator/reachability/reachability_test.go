package reachability

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/fakecluster"
	"github.com/novacron/operator/operator/provider/libvirt"
)

func TestReachableFollowsWhatTheHypervisorAnswers(t *testing.T) {
	c := fakecluster.New(t)
	c.Node(t, "node-1", 16, "64Gi")
	r := &Reconciler{Client: c.Client, Recorder: c.Events, Hypervisors: c.Hosts, Interval: time.Minute, Timeout: time.Second}
	reachable := func() metav1.Condition {
		hv := &novacronv1.Hypervisor{}
		require.NoError(t, c.Client.Get(t.Context(), client.ObjectKey{Name: "node-1"}, hv))
		require.Equal(t, "Icelake-Server", hv.Status.CPUModel, "the rest of the status is left as it was")
		cond := meta.FindStatusCondition(hv.Status.Conditions, novacronv1.HypervisorConditionReachable)
		require.NotNil(t, cond)
		return *cond
	}

	res := fakecluster.Reconcile(t, r, "", "node-1")
	assert.Equal(t, time.Minute, res.RequeueAfter, "asked again every interval")
	cond := reachable()
	assert.Equal(t, metav1.ConditionTrue, cond.Status)
	assert.Equal(t, novacronv1.ReasonConnected, cond.Reason)
	assert.Contains(t, cond.Message, "fake://node-1 answers (8 CPUs")
	assert.Empty(t, c.EventsSeen(), "a reachable node's first probe is no news")

	c.Hosts.Host("fake://node-1").SetDown(true)
	fakecluster.Reconcile(t, r, "", "node-1")
	cond = reachable()
	assert.Equal(t, metav1.ConditionFalse, cond.Status)
	assert.Equal(t, novacronv1.ReasonUnreachable, cond.Reason)
	assert.Contains(t, cond.Message, "fake://node-1 does not answer")
	assert.True(t, fakecluster.HasEvent(c.EventsSeen(), corev1.EventTypeWarning, novacronv1.ReasonHypervisorUnreachable, "does not answer"))
	res = fakecluster.Reconcile(t, r, "", "node-1")
	assert.Equal(t, time.Second, res.RequeueAfter, "a node just lost is asked again soon")
	assert.Empty(t, c.EventsSeen(), "told once")

	c.Hosts.Host("fake://node-1").SetDown(false)
	fakecluster.Reconcile(t, r, "", "node-1")
	assert.Equal(t, metav1.ConditionTrue, reachable().Status)
	assert.True(t, fakecluster.HasEvent(c.EventsSeen(), corev1.EventTypeNormal, novacronv1.ReasonHypervisorReachable, "answers"))

	// One long gone is asked once per interval.
	long := &metav1.Condition{Status: metav1.ConditionFalse, LastTransitionTime: metav1.NewTime(time.Now().Add(-time.Hour))}
	assert.Equal(t, time.Minute, r.next(long))
	assert.InDelta(t, float64(5*time.Second), float64(r.next(&metav1.Condition{Status: metav1.ConditionFalse, LastTransitionTime: metav1.NewTime(time.Now().Add(-10 * time.Second))})), float64(100*time.Millisecond))
}

// A URI the operator's rules refuse says so (and which rule), not "does not
// answer": nothing was asked.
func TestARefusedURIIsNamedAsSuch(t *testing.T) {
	c := fakecluster.New(t)
	c.Node(t, "node-1", 16, "64Gi")
	r := &Reconciler{Client: c.Client, Recorder: c.Events, Hypervisors: libvirt.NewConnector(libvirt.URIRules{}), Interval: time.Minute, Timeout: time.Second}
	hv := &novacronv1.Hypervisor{}
	require.NoError(t, c.Client.Get(t.Context(), client.ObjectKey{Name: "node-1"}, hv))
	hv.Spec.URI = "qemu+ext:///system?command=/bin/sh"
	require.NoError(t, c.Client.Update(t.Context(), hv))
	fakecluster.Reconcile(t, r, "", "node-1")
	require.NoError(t, c.Client.Get(t.Context(), client.ObjectKey{Name: "node-1"}, hv))
	cond := meta.FindStatusCondition(hv.Status.Conditions, novacronv1.HypervisorConditionReachable)
	require.NotNil(t, cond)
	assert.Equal(t, metav1.ConditionFalse, cond.Status)
	assert.Equal(t, novacronv1.ReasonURIRefused, cond.Reason)
	assert.Contains(t, cond.Message, `scheme "qemu+ext"`)
}
