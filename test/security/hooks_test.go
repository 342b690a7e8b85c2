package security

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/hooks"
)

func withJobHook(v *novacronv1.VirtualMachine, pod corev1.PodSpec) *novacronv1.VirtualMachine {
	v.Spec.Template.Spec.Lifecycle = &novacronv1.Lifecycle{PreStart: &novacronv1.LifecycleHook{
		Job: &novacronv1.JobHook{Template: novacronv1.JobTemplate{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: pod}}}}}}
	return v
}

func withHTTPHook(v *novacronv1.VirtualMachine, url string, timeoutSeconds int32) *novacronv1.VirtualMachine {
	v.Spec.Template.Spec.Lifecycle = &novacronv1.Lifecycle{PreStart: &novacronv1.LifecycleHook{
		HTTP: &novacronv1.HTTPHook{URL: url}, TimeoutSeconds: timeoutSeconds, FailurePolicy: novacronv1.HookFail}}
	return v
}

var busybox = corev1.Container{Name: "check", Image: "busybox", Command: []string{"true"}}

// Finding 2: a hook Job is created with the operator's rights, so its pod
// may take nothing of the node, and no identity the tenant picks.
func TestAJobHookTakesNothingOfTheNodeNorAnIdentity(t *testing.T) {
	ctx := context.Background()
	eve := tenant(t, "eve-jobs", "eve")
	grant(t, "eve-jobs", "eve", podRights...)
	root := corev1.PodSpec{HostPID: true, NodeName: "gpu-1", ServiceAccountName: "deployer",
		Volumes:    []corev1.Volume{{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}},
		Containers: []corev1.Container{{Name: "c", Image: "busybox", SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)}}}}
	msg := refused(t, eve.Create(ctx, withJobHook(newVM("eve-jobs", "rooted"), root)), "spec.template.spec.lifecycle.preStart.job.template.spec.template.spec.hostPID")
	for _, f := range []string{"spec.nodeName", "spec.serviceAccountName", "volumes[0].hostPath", "containers[0].securityContext.privileged"} {
		assert.Contains(t, msg, f)
	}

	// A plain one runs as novacron-hook, without a token.
	v := withJobHook(newVM("eve-jobs", "migrate-db"), corev1.PodSpec{Containers: []corev1.Container{busybox}})
	require.NoError(t, eve.Create(ctx, v))
	job := &batchv1.Job{}
	require.Eventually(t, func() bool {
		var jobs batchv1.JobList
		if env.Client.List(ctx, &jobs, client.InNamespace("eve-jobs")) != nil || len(jobs.Items) == 0 {
			return false
		}
		*job = jobs.Items[0]
		return true
	}, timeout, 50*time.Millisecond, "the hook Job was never created")
	pod := job.Spec.Template.Spec
	assert.Equal(t, hooks.ServiceAccount, pod.ServiceAccountName)
	assert.False(t, *pod.AutomountServiceAccountToken)
	assert.False(t, *pod.Containers[0].SecurityContext.AllowPrivilegeEscalation)
	sa := &corev1.ServiceAccount{}
	require.NoError(t, env.Client.Get(ctx, client.ObjectKey{Namespace: "eve-jobs", Name: hooks.ServiceAccount}, sa))
	assert.False(t, *sa.AutomountServiceAccountToken)
}

// Finding 2: the operator creates nothing its user could not: a tenant
// without the right to create Jobs gets no hook Job.
func TestAJobHookNeedsTheRightToCreateJobs(t *testing.T) {
	mallory := tenant(t, "mallory-jobs", "mallory")
	v := withJobHook(newVM("mallory-jobs", "web"), corev1.PodSpec{Containers: []corev1.Container{busybox}})
	msg := refused(t, mallory.Create(context.Background(), v), "spec.template.spec.lifecycle.preStart.job.template")
	assert.Contains(t, msg, "mallory may not create jobs in namespace mallory-jobs")
}

// Finding 4: user-data from a Secret is read by the operator; its author
// must be allowed to read that Secret.
func TestUserDataFromASecretItsAuthorCannotRead(t *testing.T) {
	ctx := context.Background()
	alice := tenant(t, "alice-secrets", "alice")
	require.NoError(t, env.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db-root", Namespace: "alice-secrets"},
		StringData: map[string]string{"userdata": "#cloud-config\n"}}))
	v := newVM("alice-secrets", "web")
	v.Spec.Running = ptr.To(false)
	v.Spec.Template.Spec.UserDataSecretRef = &novacronv1.SecretKeyRef{Name: "db-root", Key: "userdata"}
	msg := refused(t, alice.Create(ctx, v), "spec.template.spec.userDataSecretRef.name")
	assert.Contains(t, msg, "alice may not get secrets db-root in namespace alice-secrets")

	grant(t, "alice-secrets", "alice", rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{"db-root"}, Verbs: []string{"get"}})
	require.Eventually(t, func() bool { return alice.Create(ctx, v.DeepCopy()) == nil }, timeout, 100*time.Millisecond, "allowed once she may read it")
}

// hookOutcome waits for the VM's preStart hook to have failed and returns
// why.
func hookOutcome(t *testing.T, v *novacronv1.VirtualMachine) string {
	t.Helper()
	got := env.WaitVM(t, client.ObjectKeyFromObject(v), timeout, "the hook's failure", func(v *novacronv1.VirtualMachine) bool {
		return meta.IsStatusConditionFalse(v.Status.Conditions, novacronv1.VMConditionHooksSucceeded)
	})
	assert.Equal(t, novacronv1.VMStopped, got.Status.Phase)
	return meta.FindStatusCondition(got.Status.Conditions, novacronv1.VMConditionHooksSucceeded).Message
}

// Finding 3: an HTTP hook's URL is the tenant's, the call the operator's:
// it reaches neither cloud metadata nor the API server, by address, by name
// or through a redirect, and what it answers is not shown.
func TestHTTPHooksReachNothingInternal(t *testing.T) {
	ctx := context.Background()
	mallory := tenant(t, "mallory-ssrf", "mallory")

	msg := refused(t, mallory.Create(ctx, withHTTPHook(newVM("mallory-ssrf", "metadata"), "http://169.254.169.254/latest/meta-data/iam/", 5)),
		"spec.template.spec.lifecycle.preStart.http.url")
	assert.Contains(t, msg, "169.254.169.254 is in 169.254.0.0/16, which hooks may not reach")

	api, err := url.Parse(env.Config.Host)
	require.NoError(t, err)
	byName := withHTTPHook(newVM("mallory-ssrf", "api-by-name"), "https://localhost:"+api.Port()+"/api/v1/secrets", 5)
	require.NoError(t, mallory.Create(ctx, byName))
	assert.Contains(t, hookOutcome(t, byName), "address refused")

	var internalHits atomic.Int32
	internal := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { internalHits.Add(1) }))
	t.Cleanup(internal.Close)
	public := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/leak" {
			http.Error(w, "s3cr3t-token", http.StatusInternalServerError)
			return
		}
		http.Redirect(w, r, internal.URL, http.StatusTemporaryRedirect)
	}))
	public.Listener = listenHooks(t)
	public.Start()
	t.Cleanup(public.Close)

	redirected := withHTTPHook(newVM("mallory-ssrf", "redirected"), public.URL+"/go", 5)
	require.NoError(t, mallory.Create(ctx, redirected))
	assert.Contains(t, hookOutcome(t, redirected), "address refused")
	assert.Zero(t, internalHits.Load(), "the redirect's target was never called")

	leak := withHTTPHook(newVM("mallory-ssrf", "leak"), public.URL+"/leak", 5)
	require.NoError(t, mallory.Create(ctx, leak))
	why := hookOutcome(t, leak)
	assert.Contains(t, why, "answered 500 Internal Server Error")
	assert.NotContains(t, why, "s3cr3t")
}

// Finding 3: hooks that hang hold no worker. Five VMs whose preStart hooks
// never answer (the operator runs four workers) do not keep a sixth from
// reaching Running, long before any of their timeouts.
func TestHangingHooksDoNotStallOtherVMs(t *testing.T) {
	ctx := context.Background()
	mallory := tenant(t, "mallory-stall", "mallory")
	release := make(chan struct{})
	var calls atomic.Int32
	hang := httptest.NewUnstartedServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	hang.Listener = listenHooks(t)
	hang.Start()
	t.Cleanup(func() { close(release); hang.Close() })

	var hanging []*novacronv1.VirtualMachine
	for i := 0; i < 5; i++ {
		v := withHTTPHook(newVM("mallory-stall", fmt.Sprintf("hang-%d", i)), hang.URL, 600)
		require.NoError(t, mallory.Create(ctx, v))
		hanging = append(hanging, v)
	}
	require.Eventually(t, func() bool { return calls.Load() == 5 }, timeout, 50*time.Millisecond, "every hook is being called")

	alice := tenant(t, "alice-stall", "alice")
	start := time.Now()
	sixth := newVM("alice-stall", "web")
	require.NoError(t, alice.Create(ctx, sixth))
	running(t, sixth)
	t.Logf("the sixth VM reached Running %s after it was created, with 5 hooks hanging (timeouts 600 s)", time.Since(start).Round(time.Millisecond))
	for _, v := range hanging {
		got := &novacronv1.VirtualMachine{}
		require.NoError(t, env.Client.Get(ctx, client.ObjectKeyFromObject(v), got))
		c := meta.FindStatusCondition(got.Status.Conditions, novacronv1.VMConditionHooksSucceeded)
		require.NotNil(t, c, v.Name)
		assert.Equal(t, novacronv1.ReasonHookRunning, c.Reason, "%s: its hook still runs", v.Name)
	}
}

// Finding 16: a hook's credentials live in a Secret, not in clear in the VM;
// its author must be allowed to read the Secret, and the hook gets its value.
func TestHookCredentialsComeFromASecretItsAuthorMayRead(t *testing.T) {
	ctx := context.Background()
	alice := tenant(t, "alice-hook-token", "alice")
	require.NoError(t, env.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "hook-token", Namespace: "alice-hook-token"},
		StringData: map[string]string{"token": "Bearer t0ken"}}))
	got := make(chan string, 8)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got <- r.Header.Get("Authorization") }))
	srv.Listener = listenHooks(t)
	srv.Start()
	t.Cleanup(srv.Close)

	clear := withHTTPHook(newVM("alice-hook-token", "clear"), srv.URL, 5)
	clear.Spec.Template.Spec.Lifecycle.PreStart.HTTP.Headers = map[string]string{"authorization": "Bearer t0ken"}
	msg := refused(t, alice.Create(ctx, clear), "spec.template.spec.lifecycle.preStart.http.headers[authorization]")
	assert.Contains(t, msg, "put it in a Secret and name it in headersFrom")

	v := withHTTPHook(newVM("alice-hook-token", "web"), srv.URL, 5)
	v.Spec.Template.Spec.Lifecycle.PreStart.HTTP.HeadersFrom = []novacronv1.HTTPHeaderFromSecret{{Name: "Authorization", SecretName: "hook-token", Key: "token"}}
	msg = refused(t, alice.Create(ctx, v), "spec.template.spec.lifecycle.preStart.http.headersFrom[0].secretName")
	assert.Contains(t, msg, "alice may not get secrets hook-token in namespace alice-hook-token")

	grant(t, "alice-hook-token", "alice", rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{"hook-token"}, Verbs: []string{"get"}})
	require.Eventually(t, func() bool { return alice.Create(ctx, v.DeepCopy()) == nil }, timeout, 100*time.Millisecond, "allowed once she may read it")
	running(t, v)
	assert.Equal(t, "Bearer t0ken", <-got)
}
