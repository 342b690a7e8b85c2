package lifecycle

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/domain"
	"github.com/novacron/operator/operator/launcher"
	"github.com/novacron/operator/operator/provider"
	"github.com/novacron/operator/test/testenv"
)

const (
	ns      = "default"
	timeout = 20 * time.Second
	tick    = testenv.Poll
)

func newVM(name string) *novacronv1.VirtualMachine {
	v := testenv.NewVM(ns, name, 2, "4Gi")
	v.Spec.Template.Spec.Resources.Disk = ptr.To(resource.MustParse("50Gi"))
	v.Spec.Template.Spec.Networks = []novacronv1.Network{{Name: "default", Type: novacronv1.NetworkTypeBridge,
		IPv4: &novacronv1.IPv4Config{Method: novacronv1.IPv4Static, Address: "10.0.1.10/24", Gateway: "10.0.1.1"}}}
	return v
}

func create(t *testing.T, v *novacronv1.VirtualMachine) {
	t.Helper()
	require.NoError(t, env.Client.Create(context.Background(), v))
	t.Cleanup(func() { deleteAndWait(t, v.Name) })
}

func get(t *testing.T, name string) *novacronv1.VirtualMachine {
	t.Helper()
	v := &novacronv1.VirtualMachine{}
	require.NoError(t, env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, v))
	return v
}

func key(name string) client.ObjectKey { return client.ObjectKey{Namespace: ns, Name: name} }

func waitVM(t *testing.T, name, what string, ok func(*novacronv1.VirtualMachine) bool) *novacronv1.VirtualMachine {
	t.Helper()
	return env.WaitVM(t, key(name), timeout, what, ok)
}

var phaseIs = testenv.PhaseIs

func launcherPod(t *testing.T, vmName string) *corev1.Pod {
	t.Helper()
	return env.LauncherPod(t, key(vmName), timeout)
}

func bind(t *testing.T, vmName, node string, devices *novacronv1.DeviceAssignment) *corev1.Pod {
	t.Helper()
	return env.Bind(t, key(vmName), node, devices, timeout)
}

func domainState(t *testing.T, node, name string) provider.DomainState {
	t.Helper()
	st, err := host(t, node).State(context.Background(), name)
	if err != nil {
		require.ErrorIs(t, err, provider.ErrNotFound)
		return ""
	}
	return st
}

func deleteAndWait(t *testing.T, name string) {
	t.Helper()
	env.DeleteVMAndWait(t, key(name), timeout)
}

func patchRunning(t *testing.T, name string, running bool) {
	t.Helper()
	env.PatchRunning(t, key(name), running)
}

// waitEvents waits until the VM's events include every one of reasons.
func waitEvents(t *testing.T, name string, reasons ...string) {
	t.Helper()
	env.WaitEvents(t, key(name), timeout, strings.Join(reasons, ", "), testenv.HasReasons(reasons...))
}

func TestCreateRunsOnTheBoundNodeOnly(t *testing.T) {
	startOperator(t)
	ctx := context.Background()
	start := time.Now()
	v := newVM("create-run")
	v.Spec.Template.Metadata.Labels = map[string]string{"app": "db"}
	v.Spec.Template.Spec.NodeSelector = map[string]string{"node.novacron.io/type": "compute"}
	v.Spec.Template.Spec.Devices = []novacronv1.Device{{Type: novacronv1.DeviceTypeGPU, Vendor: "nvidia", Model: "tesla-t4", Count: 1}}
	v.Spec.Template.Spec.Networks = append(v.Spec.Template.Spec.Networks, novacronv1.Network{Name: "data", Type: novacronv1.NetworkTypeSRIOV})
	nad := &unstructured.Unstructured{}
	nad.SetGroupVersionKind(schema.GroupVersionKind{Group: "k8s.cni.cncf.io", Version: "v1", Kind: "NetworkAttachmentDefinition"})
	nad.SetNamespace(ns)
	nad.SetName("data")
	nad.SetAnnotations(map[string]string{"k8s.v1.cni.cncf.io/resourceName": "intel.com/sriov_data"})
	require.NoError(t, env.Client.Create(ctx, nad))
	create(t, v)

	pod := launcherPod(t, v.Name)
	assert.Equal(t, novacronv1.DefaultSchedulerName, pod.Spec.SchedulerName)
	assert.Equal(t, map[string]string{"node.novacron.io/type": "compute"}, pod.Spec.NodeSelector)
	assert.Equal(t, "db", pod.Labels["app"])
	assert.Equal(t, v.Name, pod.Labels[novacronv1.LabelVM])
	require.Len(t, pod.OwnerReferences, 1)
	assert.Equal(t, "VirtualMachine", pod.OwnerReferences[0].Kind)
	req := pod.Spec.Containers[0].Resources.Requests
	assert.Equal(t, "2", req.Cpu().String())
	// 4Gi of guest memory plus the documented overhead: 128Mi + 8Mi per vCPU.
	assert.Equal(t, int64(4<<30+128<<20+2*8<<20), req.Memory().Value())
	assert.Len(t, req, 2, "vCPUs and memory: the devices are a DRA claim")
	require.Len(t, pod.Spec.ResourceClaims, 1)
	tmpl := &resourceapi.ResourceClaimTemplate{}
	require.NoError(t, env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: *pod.Spec.ResourceClaims[0].ResourceClaimTemplateName}, tmpl))
	reqs := tmpl.Spec.Spec.Devices.Requests
	require.Len(t, reqs, 2)
	assert.Contains(t, reqs[0].Exactly.Selectors[0].CEL.Expression, `.model == "tesla-t4"`)
	assert.Contains(t, reqs[1].Exactly.Selectors[0].CEL.Expression, `.resourceName == "intel.com/sriov_data"`,
		"a VF from the pool the network's NetworkAttachmentDefinition names")
	waitVM(t, v.Name, "phase Scheduling", phaseIs(novacronv1.VMScheduling))

	bind(t, v.Name, "node-2", &novacronv1.DeviceAssignment{GPUs: []novacronv1.AssignedDevice{{Type: novacronv1.DeviceTypeGPU, Vendor: "nvidia", Model: "tesla-t4", PCIAddress: "0000:3b:00.0"}},
		VFs: map[string]string{"data": "0000:5e:02.1"}})
	got := waitVM(t, v.Name, "phase Running", phaseIs(novacronv1.VMRunning))
	t.Logf("create to Running (test driver, binding immediately): %s", time.Since(start).Round(time.Millisecond))

	assert.Equal(t, "node-2", got.Status.NodeName)
	assert.Equal(t, pod.Name, got.Status.LauncherPod)
	assert.True(t, meta.IsStatusConditionTrue(got.Status.Conditions, novacronv1.ConditionReady))
	assert.True(t, meta.IsStatusConditionTrue(got.Status.Conditions, novacronv1.VMConditionScheduled))
	assert.True(t, meta.IsStatusConditionTrue(got.Status.Conditions, novacronv1.VMConditionHypervisorReachable))
	require.Len(t, got.Status.Interfaces, 2)
	assert.Equal(t, "10.0.1.10", got.Status.Interfaces[0].IPAddress)
	assert.Equal(t, "0000:5e:02.1", got.Status.Interfaces[1].PCIAddress)
	assert.Regexp(t, `^52:54:00(:[0-9a-f]{2}){3}$`, got.Status.Interfaces[0].MAC)
	require.Len(t, got.Status.Devices, 1)
	assert.Equal(t, "0000:3b:00.0", got.Status.Devices[0].PCIAddress)

	dom := domain.DomainName(got)
	assert.Equal(t, provider.StateRunning, domainState(t, "node-2", dom))
	assert.Equal(t, provider.DomainState(""), domainState(t, "node-1", dom), "the domain exists only on the bound node")
	path, err := host(t, "node-2").VolumePath(ctx, "default", domain.RootVolumeName(got))
	require.NoError(t, err)
	assert.NotEmpty(t, path)
	waitEvents(t, v.Name, "LauncherPodCreated", "Scheduled", "Defined", "Started")
	// The test driver cannot take the cloud-init disk; the VM says so.
	ci := meta.FindStatusCondition(got.Status.Conditions, novacronv1.VMConditionCloudInit)
	require.NotNil(t, ci)
	assert.Equal(t, "Unsupported", ci.Reason)
}

func TestMissingUserDataSecretIsAClearError(t *testing.T) {
	startOperator(t)
	v := newVM("secret-userdata")
	v.Spec.Template.Spec.UserDataSecretRef = &novacronv1.SecretKeyRef{Name: "vm-keys", Key: "userdata"}
	create(t, v)
	bind(t, v.Name, "node-1", nil)
	failed := waitVM(t, v.Name, "phase Failed", phaseIs(novacronv1.VMFailed))
	c := meta.FindStatusCondition(failed.Status.Conditions, novacronv1.ConditionReady)
	assert.Equal(t, "UserDataSecretNotFound", c.Reason)
	assert.Equal(t, "spec.template.spec.userDataSecretRef: Secret default/vm-keys does not exist", c.Message)

	require.NoError(t, env.Client.Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "vm-keys", Namespace: ns},
		StringData: map[string]string{"userdata": "#cloud-config\n"},
	}))
	// A Secret is no VM event: a spec touch (as a user fixing things would) retries.
	require.NoError(t, env.Client.Patch(context.Background(), failed, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"annotations":{"retry":"1"}},"spec":{"template":{"metadata":{"labels":{"fixed":"yes"}}}}}`))))
	waitVM(t, v.Name, "phase Running once the Secret exists", phaseIs(novacronv1.VMRunning))
}

func TestStopStartAndDelete(t *testing.T) {
	startOperator(t)
	ctx := context.Background()
	v := newVM("stop-start")
	create(t, v)
	bind(t, v.Name, "node-1", nil)
	running := waitVM(t, v.Name, "phase Running", phaseIs(novacronv1.VMRunning))
	dom := domain.DomainName(running)
	mac := running.Status.Interfaces[0].MAC

	patchRunning(t, v.Name, false)
	waitVM(t, v.Name, "phase Stopped", phaseIs(novacronv1.VMStopped))
	assert.Equal(t, provider.StateShutoff, domainState(t, "node-1", dom), "stopped, not deleted")
	assert.Eventually(t, func() bool {
		return apierrors.IsNotFound(env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: launcher.PodName(v.Name)}, &corev1.Pod{}))
	}, timeout, tick, "a stopped VM's launcher pod is removed to free the node")

	patchRunning(t, v.Name, true)
	pod := launcherPod(t, v.Name)
	// The VM's disks are on node-1: the new pod may only go there.
	require.NotNil(t, pod.Spec.Affinity)
	terms := pod.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	require.Len(t, terms, 1)
	assert.Equal(t, []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{"node-1"}}}, terms[0].MatchFields)
	bind(t, v.Name, "node-1", nil)
	again := waitVM(t, v.Name, "phase Running again", phaseIs(novacronv1.VMRunning))
	assert.Equal(t, provider.StateRunning, domainState(t, "node-1", dom))
	assert.Equal(t, mac, again.Status.Interfaces[0].MAC, "MAC addresses are stable across restarts")
	waitEvents(t, v.Name, "Stopping", "Stopped", "Started")

	deleteAndWait(t, v.Name)
	assert.Equal(t, provider.DomainState(""), domainState(t, "node-1", dom), "delete removes the domain")
	_, err := host(t, "node-1").VolumePath(ctx, "default", domain.RootVolumeName(again))
	assert.ErrorIs(t, err, provider.ErrNotFound, "delete removes the VM's disk")
	assert.True(t, apierrors.IsNotFound(env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: launcher.PodName(v.Name)}, &corev1.Pod{})))
}

func TestUnknownImageIsAClearErrorUntilFixed(t *testing.T) {
	startOperator(t)
	v := newVM("bad-image")
	v.Spec.Template.Spec.Image.Source = "marketplace://windows-11"
	create(t, v)
	bind(t, v.Name, "node-1", nil)
	failed := waitVM(t, v.Name, "phase Failed", phaseIs(novacronv1.VMFailed))
	c := meta.FindStatusCondition(failed.Status.Conditions, novacronv1.ConditionReady)
	require.NotNil(t, c)
	assert.Equal(t, "ImageNotFound", c.Reason)
	assert.Contains(t, c.Message, `image "windows-11" is not in the image catalog`)
	assert.Contains(t, c.Message, "known images: ubuntu-22.04-lts")
	waitEvents(t, v.Name, "ImageNotFound")
	assert.Equal(t, provider.DomainState(""), domainState(t, "node-1", domain.DomainName(failed)))

	require.NoError(t, env.Client.Patch(context.Background(), failed, client.RawPatch(types.MergePatchType,
		[]byte(`{"spec":{"template":{"spec":{"image":{"source":"marketplace://ubuntu-22.04-lts"}}}}}`))))
	waitVM(t, v.Name, "phase Running after fixing the image", phaseIs(novacronv1.VMRunning))
}

func TestUnschedulableReasonShowsOnTheVM(t *testing.T) {
	startOperator(t)
	v := newVM("unschedulable")
	create(t, v)
	pod := launcherPod(t, v.Name)
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable,
		Message: "0/2 nodes are available: node-1: 0/2 tesla-t4 free, node-2: policy gpu-zones denies the node."}}
	require.NoError(t, env.Client.Status().Update(context.Background(), pod))
	got := waitVM(t, v.Name, "the scheduler's reason", func(v *novacronv1.VirtualMachine) bool {
		c := meta.FindStatusCondition(v.Status.Conditions, novacronv1.VMConditionScheduled)
		return c != nil && c.Reason == corev1.PodReasonUnschedulable
	})
	assert.Equal(t, novacronv1.VMScheduling, got.Status.Phase)
	assert.Contains(t, meta.FindStatusCondition(got.Status.Conditions, novacronv1.VMConditionScheduled).Message, "node-1: 0/2 tesla-t4 free")
	waitEvents(t, v.Name, "Unschedulable")
}

// hookServer records the hook calls it gets and answers with status.
type hookServer struct {
	*httptest.Server
	mu     sync.Mutex
	calls  []novacronHookCall
	status int
}

type novacronHookCall struct {
	Body   map[string]any
	Header http.Header
}

func newHookServer(t *testing.T, status int) *hookServer {
	h := &hookServer{status: status}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var m map[string]any
		_ = json.Unmarshal(body, &m)
		h.mu.Lock()
		h.calls = append(h.calls, novacronHookCall{Body: m, Header: r.Header.Clone()})
		code := h.status
		h.mu.Unlock()
		w.WriteHeader(code)
		_, _ = w.Write([]byte("hook says " + http.StatusText(code)))
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hookServer) hooks() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, c := range h.calls {
		out = append(out, fmt.Sprint(c.Body["hook"]))
	}
	return out
}

func TestHTTPHooks(t *testing.T) {
	startOperator(t)
	srv := newHookServer(t, http.StatusOK)
	v := newVM("http-hooks")
	v.Spec.Template.Spec.Lifecycle = &novacronv1.Lifecycle{
		PreStart: &novacronv1.LifecycleHook{HTTP: &novacronv1.HTTPHook{URL: srv.URL + "/pre-start", Headers: map[string]string{"X-Team": "platform"}}, TimeoutSeconds: 5, FailurePolicy: novacronv1.HookFail},
		PreStop:  &novacronv1.LifecycleHook{HTTP: &novacronv1.HTTPHook{URL: srv.URL + "/pre-stop"}, TimeoutSeconds: 5, FailurePolicy: novacronv1.HookFail},
	}
	create(t, v)
	bind(t, v.Name, "node-1", nil)
	got := waitVM(t, v.Name, "phase Running", phaseIs(novacronv1.VMRunning))
	require.Equal(t, []string{"preStart"}, srv.hooks())
	srv.mu.Lock()
	call := srv.calls[0]
	srv.mu.Unlock()
	assert.Equal(t, "platform", call.Header.Get("X-Team"))
	assert.Equal(t, "http-hooks", call.Body["name"])
	assert.Equal(t, ns, call.Body["namespace"])
	assert.Equal(t, string(got.UID), call.Body["uid"])
	assert.Equal(t, "node-1", call.Body["node"])

	patchRunning(t, v.Name, false)
	waitVM(t, v.Name, "phase Stopped", phaseIs(novacronv1.VMStopped))
	assert.Equal(t, []string{"preStart", "preStop"}, srv.hooks())
}

func TestFailedPreStartKeepsTheVMStopped(t *testing.T) {
	startOperator(t)
	srv := newHookServer(t, http.StatusServiceUnavailable)
	v := newVM("prestart-fails")
	v.Spec.Template.Spec.Lifecycle = &novacronv1.Lifecycle{
		PreStart: &novacronv1.LifecycleHook{HTTP: &novacronv1.HTTPHook{URL: srv.URL}, TimeoutSeconds: 5, Retries: 1, FailurePolicy: novacronv1.HookFail},
	}
	create(t, v)
	bind(t, v.Name, "node-1", nil)
	got := waitVM(t, v.Name, "the hook failure", func(v *novacronv1.VirtualMachine) bool {
		return meta.IsStatusConditionFalse(v.Status.Conditions, novacronv1.VMConditionHooksSucceeded)
	})
	c := meta.FindStatusCondition(got.Status.Conditions, novacronv1.VMConditionHooksSucceeded)
	assert.Equal(t, "PreStartHookFailed", c.Reason)
	assert.Contains(t, c.Message, "preStart hook failed after 2 tries")
	assert.Contains(t, c.Message, "answered 503 Service Unavailable")
	assert.NotContains(t, c.Message, "hook says", "what a hook answers is never shown")
	assert.Equal(t, novacronv1.VMStopped, got.Status.Phase)
	assert.Equal(t, provider.StateShutoff, domainState(t, "node-1", domain.DomainName(got)), "defined but never started")
	waitEvents(t, v.Name, "HookFailed")
	// It is not retried in a loop: two tries, then it waits for a spec change.
	assert.Len(t, srv.hooks(), 2)

	// The same hook with failurePolicy Ignore lets the VM start.
	require.NoError(t, env.Client.Patch(context.Background(), got, client.RawPatch(types.MergePatchType,
		[]byte(`{"spec":{"template":{"spec":{"lifecycle":{"preStart":{"failurePolicy":"Ignore"}}}}}}`))))
	waitVM(t, v.Name, "phase Running with the failure ignored", phaseIs(novacronv1.VMRunning))
}

func TestJobHook(t *testing.T) {
	startOperator(t)
	ctx := context.Background()
	v := newVM("job-hook")
	v.Spec.Template.Spec.Lifecycle = &novacronv1.Lifecycle{PreStart: &novacronv1.LifecycleHook{
		Job: &novacronv1.JobHook{Template: novacronv1.JobTemplate{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "register", Image: "busybox", Command: []string{"sh", "-c", "echo registering"}}},
		}}}}},
		TimeoutSeconds: 60, FailurePolicy: novacronv1.HookFail,
	}}
	create(t, v)
	bind(t, v.Name, "node-1", nil)

	var job batchv1.Job
	require.Eventually(t, func() bool {
		var jobs batchv1.JobList
		if env.Client.List(ctx, &jobs, client.InNamespace(ns), client.MatchingLabels{novacronv1.LabelVM: v.Name}) != nil || len(jobs.Items) != 1 {
			return false
		}
		job = jobs.Items[0]
		return true
	}, timeout, tick, "the preStart Job was not created")
	assert.Equal(t, corev1.RestartPolicyNever, job.Spec.Template.Spec.RestartPolicy)
	waitVM(t, v.Name, "phase Starting while the Job runs", phaseIs(novacronv1.VMStarting))
	assert.Equal(t, provider.StateShutoff, domainState(t, "node-1", domain.DomainName(get(t, v.Name))))

	// Play the Job controller: the Job succeeds.
	now := metav1.Now()
	job.Status = batchv1.JobStatus{StartTime: &now, CompletionTime: &now, Succeeded: 1, Conditions: []batchv1.JobCondition{
		{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, LastTransitionTime: now},
	}}
	require.NoError(t, env.Client.Status().Update(ctx, &job))
	waitVM(t, v.Name, "phase Running after the Job", phaseIs(novacronv1.VMRunning))
}

func TestFailedJobHookKeepsTheVMStopped(t *testing.T) {
	startOperator(t)
	ctx := context.Background()
	v := newVM("job-hook-fails")
	v.Spec.Template.Spec.Lifecycle = &novacronv1.Lifecycle{PreStart: &novacronv1.LifecycleHook{
		Job: &novacronv1.JobHook{Template: novacronv1.JobTemplate{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "check", Image: "busybox", Command: []string{"false"}}},
		}}}}},
		FailurePolicy: novacronv1.HookFail,
	}}
	create(t, v)
	bind(t, v.Name, "node-1", nil)
	var job batchv1.Job
	require.Eventually(t, func() bool {
		return env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: fmt.Sprintf("%s-prestart-%d", v.Name, get(t, v.Name).Generation)}, &job) == nil
	}, timeout, tick)
	now := metav1.Now()
	job.Status = batchv1.JobStatus{StartTime: &now, Failed: 1, Conditions: []batchv1.JobCondition{
		{Type: batchv1.JobFailureTarget, Status: corev1.ConditionTrue, Reason: "BackoffLimitExceeded", Message: "Job has reached the specified backoff limit", LastTransitionTime: now},
		{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, Reason: "BackoffLimitExceeded", Message: "Job has reached the specified backoff limit", LastTransitionTime: now},
	}}
	require.NoError(t, env.Client.Status().Update(ctx, &job))
	got := waitVM(t, v.Name, "the Job failure", func(v *novacronv1.VirtualMachine) bool {
		return meta.IsStatusConditionFalse(v.Status.Conditions, novacronv1.VMConditionHooksSucceeded)
	})
	assert.Equal(t, novacronv1.VMStopped, got.Status.Phase)
	assert.Contains(t, meta.FindStatusCondition(got.Status.Conditions, novacronv1.VMConditionHooksSucceeded).Message, "BackoffLimitExceeded")
	assert.Equal(t, provider.StateShutoff, domainState(t, "node-1", domain.DomainName(got)))
}

func TestHypervisorUnreachableThenBack(t *testing.T) {
	startOperator(t)
	v := newVM("unreachable")
	create(t, v)
	bind(t, v.Name, "node-2", nil)
	running := waitVM(t, v.Name, "phase Running", phaseIs(novacronv1.VMRunning))
	dom := domain.DomainName(running)

	hypervisors.SetDown(nodeURIs["node-2"], true)
	t.Cleanup(func() { hypervisors.SetDown(nodeURIs["node-2"], false) })
	unknown := waitVM(t, v.Name, "phase Unknown", phaseIs(novacronv1.VMUnknown))
	c := meta.FindStatusCondition(unknown.Status.Conditions, novacronv1.VMConditionHypervisorReachable)
	require.NotNil(t, c)
	assert.Equal(t, metav1.ConditionFalse, c.Status)
	assert.Contains(t, c.Message, "simulated outage")
	waitEvents(t, v.Name, "HypervisorUnreachable")

	// While it is away the user stops the VM; when it is back the VM converges.
	patchRunning(t, v.Name, false)
	hypervisors.SetDown(nodeURIs["node-2"], false)
	waitVM(t, v.Name, "phase Stopped after the hypervisor is back", phaseIs(novacronv1.VMStopped))
	assert.Equal(t, provider.StateShutoff, domainState(t, "node-2", dom))
	assert.Equal(t, provider.DomainState(""), domainState(t, "node-1", dom))
}

// An operator that dies between defining a domain and starting it leaves a
// defined domain; the next one finds it and starts it, never a second one.
func TestOperatorRestartConvergesToOneDomain(t *testing.T) {
	ctx := context.Background()
	hypervisors.failStart.Store(true)
	t.Cleanup(func() { hypervisors.failStart.Store(false) })
	stop := startOperator(t)
	v := newVM("restart")
	create(t, v)
	bind(t, v.Name, "node-1", nil)
	require.Eventually(t, func() bool {
		return domainState(t, "node-1", domain.DomainName(get(t, v.Name))) == provider.StateShutoff
	}, timeout, tick, "the first operator never defined the domain")
	stop()

	hypervisors.failStart.Store(false)
	startOperator(t)
	got := waitVM(t, v.Name, "phase Running under the second operator", phaseIs(novacronv1.VMRunning))
	var found []string
	for _, node := range []string{"node-1", "node-2"} {
		names, err := host(t, node).Domains(ctx)
		require.NoError(t, err)
		for _, n := range names {
			if n == domain.DomainName(got) {
				found = append(found, node)
			}
		}
	}
	assert.Equal(t, []string{"node-1"}, found, "exactly one domain, on the bound node")
	deleteAndWait(t, v.Name) // while an operator still runs
}

func TestMetricsAreScraped(t *testing.T) {
	startOperator(t)
	v := newVM("metrics")
	create(t, v)
	bind(t, v.Name, "node-1", nil)
	waitVM(t, v.Name, "phase Running", phaseIs(novacronv1.VMRunning))

	var body string
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var ours []string
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "novacron_") {
				ours = append(ours, line)
			}
		}
		body = strings.Join(ours, "\n")
		return strings.Contains(body, `novacron_vm_memory_usage_bytes{name="metrics",namespace="default",node="node-1"}`) &&
			strings.Contains(body, `novacron_vm_cpu_usage_cores{name="metrics",namespace="default",node="node-1"}`)
	}, timeout, 100*time.Millisecond, "usage metrics never appeared")
	for _, want := range []string{
		`novacron_vm_total{phase="Running"}`,
		`novacron_vm_total{phase="Stopped"}`,
		`novacron_reconcile_total{controller="virtualmachine",result="success"}`,
		`novacron_reconcile_duration_seconds_bucket{controller="virtualmachine"`,
		`novacron_vm_memory_usage_bytes{name="metrics",namespace="default",node="node-1"} 4.294967296e+09`,
	} {
		assert.Contains(t, body, want)
	}
	assert.NotContains(t, body, `novacron_vm_total{phase="Running"} 0`)
}
