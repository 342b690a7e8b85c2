package vm

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/fakecluster"
	"github.com/novacron/operator/operator/provider"
)

// A failed preStart hook under the Fail policy keeps the VM stopped, says
// which hook failed, and is not run again until the spec changes.
func TestAFailedPreStartHookKeepsTheVMStoppedUntilTheSpecChanges(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		calls.Add(1)
		http.Error(w, "database not ready", http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)

	e := newEnv(t)
	v := newVM("web")
	v.Spec.Template.Spec.Lifecycle = &novacronv1.Lifecycle{PreStart: &novacronv1.LifecycleHook{HTTP: &novacronv1.HTTPHook{URL: srv.URL}}}
	e.create(t, v)
	e.reconcile(t, "web")
	e.bind(t, "web", "node-1")
	e.reconcile(t, "web")

	v = e.vm(t, "web")
	assert.Equal(t, novacronv1.VMStopped, v.Status.Phase)
	hooks := condition(v, novacronv1.VMConditionHooksSucceeded)
	assert.Equal(t, metav1.ConditionFalse, hooks.Status)
	assert.Equal(t, novacronv1.ReasonPreStartHookFailed, hooks.Reason)
	assert.Contains(t, hooks.Message, "database not ready")
	_, st, _ := e.host.Domain("team_web")
	assert.Equal(t, provider.StateShutoff, st, "defined, never started")
	assert.True(t, fakecluster.HasEvent(e.EventsSeen(), corev1.EventTypeWarning, novacronv1.ReasonHookFailed, "stays stopped"))
	require.Equal(t, int32(1), calls.Load())

	e.reconcile(t, "web")
	assert.Equal(t, int32(1), calls.Load(), "not again for the same spec")

	// A changed spec tries again; an Ignore policy starts the VM anyway.
	v = e.vm(t, "web")
	v.Spec.Template.Spec.Lifecycle.PreStart.FailurePolicy = novacronv1.HookIgnore
	v.Generation++
	require.NoError(t, e.Client.Update(t.Context(), v))
	e.reconcile(t, "web")
	assert.Equal(t, int32(2), calls.Load())
	_, st, _ = e.host.Domain("team_web")
	assert.Equal(t, provider.StateRunning, st)
}
