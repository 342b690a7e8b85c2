package hooks

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

func loopbackCaller(objs ...client.Object) *Caller {
	return NewCaller(Egress{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}.Client(), fake.NewClientBuilder().WithObjects(objs...).Build())
}

func vm(gen int64) *novacronv1.VirtualMachine {
	return &novacronv1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "team", UID: "uid-web", Generation: gen}}
}

// wait is the caller's wake-up for the VM: the call returned.
func wait(t *testing.T, c *Caller) {
	t.Helper()
	select {
	case ev := <-c.Done:
		require.Equal(t, "web", ev.Object.Name)
	case <-time.After(time.Minute):
		t.Fatal("the call never returned")
	}
}

func TestACallRunsInTheBackgroundOncePerGeneration(t *testing.T) {
	got := make(chan Request, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		var req Request
		_ = json.NewDecoder(r.Body).Decode(&req)
		got <- req
	}))
	t.Cleanup(srv.Close)
	c := loopbackCaller()
	hook := &novacronv1.LifecycleHook{HTTP: &novacronv1.HTTPHook{URL: srv.URL}}

	running, err := c.Call(vm(3), "preStart", hook)
	require.True(t, running)
	require.NoError(t, err)
	wait(t, c)
	running, err = c.Call(vm(3), "preStart", hook)
	assert.False(t, running)
	assert.NoError(t, err)
	assert.Equal(t, Request{Hook: "preStart", Namespace: "team", Name: "web", UID: "uid-web", Generation: 3}, <-got)

	running, _ = c.Call(vm(3), "preStart", hook)
	assert.False(t, running, "not again for the same generation")
	running, _ = c.Call(vm(4), "preStart", hook)
	assert.True(t, running, "a new generation calls again")
	wait(t, c)
	<-got
}

// A hook that never answers ends at its deadline (every try's timeout and
// the pauses between; the server here answers only once the test is over),
// and what hooks answer is never reported.
func TestAHangingHookEndsAtItsDeadline(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/secret" {
			http.Error(w, "root:x:0:0", http.StatusForbidden)
			return
		}
		<-release
	}))
	t.Cleanup(func() { close(release); srv.Close() })
	c := loopbackCaller()

	running, _ := c.Call(vm(1), "preStop", &novacronv1.LifecycleHook{HTTP: &novacronv1.HTTPHook{URL: srv.URL}, TimeoutSeconds: 1, Retries: 1})
	require.True(t, running)
	wait(t, c)
	_, err := c.Call(vm(1), "preStop", nil)
	assert.ErrorContains(t, err, "preStop hook failed after 2 tries")
	assert.ErrorContains(t, err, "context deadline exceeded")

	running, _ = c.Call(vm(2), "preStop", &novacronv1.LifecycleHook{HTTP: &novacronv1.HTTPHook{URL: srv.URL + "/secret"}})
	require.True(t, running)
	wait(t, c)
	_, err = c.Call(vm(2), "preStop", nil)
	assert.ErrorContains(t, err, "answered 403 Forbidden")
	assert.NotContains(t, err.Error(), "root:x")
}

// Headers from a Secret reach the hook, read when the call starts; a missing
// Secret or key fails the hook naming the field, never showing a value.
func TestHeadersFromASecretReachTheHook(t *testing.T) {
	got := make(chan http.Header, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got <- r.Header }))
	t.Cleanup(srv.Close)
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "hook-token", Namespace: "team"}, Data: map[string][]byte{"token": []byte("Bearer s3cret\n")}}
	c := loopbackCaller(secret)
	hook := &novacronv1.LifecycleHook{HTTP: &novacronv1.HTTPHook{URL: srv.URL, Headers: map[string]string{"X-Team": "web"},
		HeadersFrom: []novacronv1.HTTPHeaderFromSecret{{Name: "Authorization", SecretName: "hook-token", Key: "token"}}}}
	_, err := c.Call(vm(1), "preStart", hook)
	require.NoError(t, err)
	wait(t, c)
	_, err = c.Call(vm(1), "preStart", hook)
	require.NoError(t, err)
	h := <-got
	assert.Equal(t, "Bearer s3cret", h.Get("Authorization"), "the trailing newline of a file-made Secret is dropped")
	assert.Equal(t, "web", h.Get("X-Team"))

	hook.HTTP.HeadersFrom[0].Key = "nope"
	_, _ = c.Call(vm(2), "preStart", hook)
	wait(t, c)
	_, err = c.Call(vm(2), "preStart", hook)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `spec.template.spec.lifecycle.preStart.http.headersFrom[0]: Secret team/hook-token has no key "nope"`)
	hook.HTTP.HeadersFrom[0].SecretName = "gone"
	_, _ = c.Call(vm(3), "preStart", hook)
	wait(t, c)
	_, err = c.Call(vm(3), "preStart", hook)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "reading Secret team/gone")
	assert.NotContains(t, err.Error(), "s3cret")
	assert.Empty(t, got, "no call without its headers")
}
