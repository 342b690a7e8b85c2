package vm

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

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
	running := condition(e.vm(t, "web"), novacronv1.VMConditionHooksSucceeded)
	assert.Equal(t, novacronv1.ReasonHookRunning, running.Reason, "called in the background")
	e.hookReturned(t, "web")

	v = e.vm(t, "web")
	assert.Equal(t, novacronv1.VMStopped, v.Status.Phase)
	hooks := condition(v, novacronv1.VMConditionHooksSucceeded)
	assert.Equal(t, metav1.ConditionFalse, hooks.Status)
	assert.Equal(t, novacronv1.ReasonPreStartHookFailed, hooks.Reason)
	assert.Contains(t, hooks.Message, "503 Service Unavailable")
	assert.NotContains(t, hooks.Message, "database not ready", "what a hook answers is not shown: it may be something the tenant may not read")
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
	e.hookReturned(t, "web")
	assert.Equal(t, int32(2), calls.Load())
	_, st, _ = e.host.Domain("team_web")
	assert.Equal(t, provider.StateRunning, st)
}

// hookReturned waits for the VM's hook call to return, as the controller
// does (it is woken through Hooks.Done), and reconciles the VM.
func (e *env) hookReturned(t *testing.T, name string) {
	t.Helper()
	select {
	case ev := <-e.r.Hooks.Done:
		require.Equal(t, name, ev.Object.Name)
	case <-time.After(time.Minute):
		t.Fatal("the hook call never returned")
	}
	e.reconcile(t, name)
}

// A VM in a namespace being deleted cannot make its preStop Job: that is
// reported and the delete goes on, rather than waiting for ever.
func TestADeleteGoesOnWhenThePreStopJobCannotBeMade(t *testing.T) {
	e := newEnv(t)
	v := newVM("web")
	v.Spec.Template.Spec.Lifecycle = &novacronv1.Lifecycle{PreStop: &novacronv1.LifecycleHook{Job: &novacronv1.JobHook{Template: novacronv1.JobTemplate{
		Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "drain", Image: "busybox"}}}}}}}}}
	e.create(t, v)
	e.reconcile(t, "web")
	e.bind(t, "web", "node-1")
	e.reconcile(t, "web")
	require.Equal(t, novacronv1.VMRunning, e.vm(t, "web").Status.Phase)

	terminating := func(_ context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
		if _, ok := obj.(*batchv1.Job); ok {
			return apierrors.NewForbidden(batchv1.Resource("jobs"), obj.GetName(), errors.New("namespace team is being terminated"))
		}
		return c.Create(context.Background(), obj, opts...)
	}
	e.r.Client = interceptor.NewClient(e.Client.(client.WithWatch), interceptor.Funcs{Create: terminating})
	require.NoError(t, e.Client.Delete(t.Context(), e.vm(t, "web")))
	e.reconcile(t, "web")

	assert.True(t, apierrors.IsNotFound(e.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "web"}, &novacronv1.VirtualMachine{})), "the finalizer let the VM go")
	_, _, defined := e.host.Domain("team_web")
	assert.False(t, defined, "and its domain went with it")
	assert.True(t, fakecluster.HasEvent(e.EventsSeen(), corev1.EventTypeWarning, novacronv1.ReasonHookFailed, "being terminated"))
}
