package nodeagent

import (
	"path/filepath"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/devices/agent"
	"github.com/novacron/operator/devices/discovery"
	"github.com/novacron/operator/test/testenv"
)

const agentNS = "novacron-system"

// installNodeManifests applies the agent's shipped RBAC and node
// restriction.
func installNodeManifests(t *testing.T) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: agentNS}}
	if err := suite.Env.Client.Create(suite.Ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		require.NoError(t, err)
	}
	dir := filepath.Join(suite.Env.RepoRoot, "manifests", "node")
	for _, f := range []string{"role.yaml", "rbac.yaml", "node-restriction.yaml"} {
		out, err := suite.Env.Kubectl(suite.Ctx, "apply", "-f", filepath.Join(dir, f))
		require.NoError(t, err, out)
	}
}

// agentIdentity is what a novacron-node pod on a node gets: a projected
// ServiceAccount token bound to that pod, so it carries the node.
type agentIdentity struct {
	config *rest.Config
	client client.Client
	kube   kubernetes.Interface
}

func identity(t *testing.T, node string, boundToPod bool) agentIdentity {
	t.Helper()
	ctx := suite.Ctx
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(3600))}}
	if boundToPod {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "novacron-node-" + node, Namespace: agentNS},
			Spec: corev1.PodSpec{ServiceAccountName: "novacron-node", NodeName: node, Containers: []corev1.Container{{Name: "agent", Image: "novacron/operator:latest"}}}}
		require.NoError(t, suite.Env.Client.Create(ctx, pod))
		req.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	}
	admin, err := kubernetes.NewForConfig(suite.Env.Config)
	require.NoError(t, err)
	tok, err := admin.CoreV1().ServiceAccounts(agentNS).CreateToken(ctx, "novacron-node", req, metav1.CreateOptions{})
	require.NoError(t, err)
	cfg := rest.AnonymousClientConfig(suite.Env.Config)
	cfg.BearerToken = tok.Status.Token
	id := agentIdentity{config: cfg}
	id.client, err = client.New(cfg, client.Options{Scheme: suite.Env.Scheme})
	require.NoError(t, err)
	id.kube, err = kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	return id
}

func (id agentIdentity) agent(t *testing.T, n *node) *agent.Agent {
	t.Helper()
	a, err := agent.New(suite.Ctx, agent.Options{Node: n.name, Namespace: agentNS, SysfsRoot: n.sys, Interval: time.Second,
		Config: discovery.Config{SRIOV: []discovery.SRIOVConfig{{PF: "ens1f0", ResourceName: "intel.com/sriov_data"}}},
		Client: id.client, Kube: id.kube})
	require.NoError(t, err)
	t.Cleanup(a.Stop)
	return a
}

func applyGPUs(id agentIdentity, node string) error {
	u := &unstructured.Unstructured{Object: map[string]any{"status": map[string]any{
		"gpus": []any{map[string]any{"vendor": "nvidia", "model": "h100-80gb-hbm3", "pciAddress": "0000:18:00.0"}}}}}
	u.SetAPIVersion("novacron.io/v1alpha1")
	u.SetKind("Hypervisor")
	u.SetName(node)
	return id.client.Status().Apply(suite.Ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(agent.FieldManager), client.ForceOwnership)
}

// Two agents, each with its pod's token: each publishes its own node with
// only the shipped RBAC; a tenant-minded attacker holding node A's token
// can write nothing of node B (Hypervisor status, slices, Lease), and a
// token bound to no pod writes nothing at all.
func TestAnAgentWritesOnlyItsOwnNode(t *testing.T) {
	installNodeManifests(t)
	ctx := suite.Ctx
	a, b := newNode(t, "node-a", t4Node()), newNode(t, "node-b", t4Node())
	idA, idB := identity(t, a.name, true), identity(t, b.name, true)

	// The policy takes effect a moment after it is created: wait for its
	// first refusal.
	require.Eventually(t, func() bool {
		err := applyGPUs(idA, b.name)
		return apierrors.IsInvalid(err) || apierrors.IsForbidden(err)
	}, timeout, testenv.Poll, "node A's token is refused node B's Hypervisor")
	err := applyGPUs(idA, b.name)
	assert.ErrorContains(t, err, "novacron-node of node node-a may write only Hypervisor node-a, not node-b")

	// Each agent publishes its own node with the shipped RBAC alone.
	require.NoError(t, idA.agent(t, a).Round(ctx))
	require.NoError(t, idB.agent(t, b).Round(ctx))
	a.devices(t, t4Devices)
	slicesB := b.devices(t, t4Devices)
	assert.Len(t, slicesB, 4)

	// Node B's slice, as node A's token: neither create, change nor delete.
	forged := &resourceapi.ResourceSlice{ObjectMeta: metav1.ObjectMeta{Name: "forged-" + b.name}, Spec: resourceapi.ResourceSliceSpec{
		Driver: discovery.DriverName, NodeName: ptr.To(b.name), Pool: resourceapi.ResourcePool{Name: b.name, ResourceSliceCount: 1}}}
	_, err = idA.kube.ResourceV1().ResourceSlices().Create(ctx, forged, metav1.CreateOptions{})
	assert.ErrorContains(t, err, "may write only devices.novacron.io ResourceSlices of pool and node node-a")
	list, err := idA.kube.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + b.name})
	require.NoError(t, err)
	require.NotEmpty(t, list.Items)
	theirs := list.Items[0]
	theirs.Spec.Devices = nil
	_, err = idA.kube.ResourceV1().ResourceSlices().Update(ctx, &theirs, metav1.UpdateOptions{})
	assert.ErrorContains(t, err, "may write only devices.novacron.io ResourceSlices of pool and node node-a")
	moved := list.Items[0].DeepCopy()
	moved.Spec.NodeName = ptr.To(a.name)
	_, err = idA.kube.ResourceV1().ResourceSlices().Update(ctx, moved, metav1.UpdateOptions{})
	assert.ErrorContains(t, err, "field is immutable", "nor take it over by renaming its node (the API refuses that before the policy)")
	err = idA.kube.ResourceV1().ResourceSlices().Delete(ctx, list.Items[0].Name, metav1.DeleteOptions{})
	assert.ErrorContains(t, err, "may write only devices.novacron.io ResourceSlices of pool and node node-a")

	// Node B's heartbeat, as node A's token.
	var lease coordinationv1.Lease
	require.NoError(t, idA.client.Get(ctx, client.ObjectKey{Namespace: agentNS, Name: agent.LeaseName(b.name)}, &lease))
	lease.Spec.HolderIdentity = ptr.To(a.name)
	assert.ErrorContains(t, idA.client.Update(ctx, &lease), "may write only Lease novacron-node-node-a")

	// On its own node: nothing of the operator's part of the status, and
	// nothing of another DRA driver's slices.
	u := &unstructured.Unstructured{Object: map[string]any{"status": map[string]any{"cpuModel": "Forged-CPU",
		"conditions": []any{map[string]any{"type": "Reachable", "status": "True", "reason": "Connected", "message": "forged", "lastTransitionTime": "2026-01-01T00:00:00Z"}}}}}
	u.SetAPIVersion("novacron.io/v1alpha1")
	u.SetKind("Hypervisor")
	u.SetName(a.name)
	err = idA.client.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("forger"), client.ForceOwnership)
	assert.ErrorContains(t, err, "may write only the device inventory (gpus, sriov, numaNodes) of the status of Hypervisor node-a")
	hvA := a.hypervisor(t)
	hvA.Status.CPUModel = "Icelake-Server" // the operator's part
	require.NoError(t, suite.Env.Client.Status().Update(ctx, hvA, client.FieldOwner("novacron-operator")))
	wipe := &novacronv1.Hypervisor{ObjectMeta: metav1.ObjectMeta{Name: a.name}}
	assert.ErrorContains(t, idA.client.Status().Patch(ctx, wipe, client.RawPatch(types.MergePatchType, []byte(`{"status":null}`))),
		"may write only the device inventory", "nor wipe the operator's part by removing the status")
	nvidia := &resourceapi.ResourceSlice{ObjectMeta: metav1.ObjectMeta{Name: "node-a-gpu-nvidia-com"}, Spec: resourceapi.ResourceSliceSpec{
		Driver: "gpu.nvidia.com", NodeName: ptr.To(a.name), Pool: resourceapi.ResourcePool{Name: a.name, ResourceSliceCount: 1}}}
	_, err = idA.kube.ResourceV1().ResourceSlices().Create(ctx, nvidia, metav1.CreateOptions{})
	assert.ErrorContains(t, err, "may write only devices.novacron.io ResourceSlices", "not another driver's, even on its node")
	admin, err := kubernetes.NewForConfig(suite.Env.Config)
	require.NoError(t, err)
	_, err = admin.ResourceV1().ResourceSlices().Create(ctx, nvidia, metav1.CreateOptions{})
	require.NoError(t, err)
	err = idA.kube.ResourceV1().ResourceSlices().Delete(ctx, nvidia.Name, metav1.DeleteOptions{})
	assert.ErrorContains(t, err, "may write only devices.novacron.io ResourceSlices", "nor delete one")
	assert.Equal(t, "1eb8", a.hypervisor(t).Status.GPUs[0].Model)
	assert.Equal(t, "Icelake-Server", a.hypervisor(t).Status.CPUModel)

	// A token bound to no pod carries no node: it writes nothing.
	loose := identity(t, a.name, false)
	assert.ErrorContains(t, applyGPUs(loose, a.name), "only with a token bound to a Pod on its node")

	// Nothing of node B changed.
	assert.Len(t, b.devices(t, t4Devices), 4)
	assert.Len(t, b.hypervisor(t).Status.GPUs, 2)
	assert.Equal(t, "1eb8", b.hypervisor(t).Status.GPUs[0].Model)
}
