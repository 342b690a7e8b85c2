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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

func loopbackCaller() *Caller {
	return NewCaller(Egress{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}.Client())
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
