package vm

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/domain"
	"github.com/novacron/operator/operator/fakecluster"
	"github.com/novacron/operator/operator/hooks"
	"github.com/novacron/operator/operator/launcher"
	"github.com/novacron/operator/operator/provider"
	"github.com/novacron/operator/operator/provider/fake"
)

const ns = "team"

// env is one test's cluster, the VM controller under test, and node-1's
// in-memory hypervisor.
type env struct {
	*fakecluster.Cluster
	r    *Reconciler
	host *fake.Host
}

func newEnv(t *testing.T) *env {
	t.Helper()
	c := fakecluster.New(t)
	c.Catalog(t, map[string]string{"ubuntu": "ubuntu.qcow2"})
	c.Node(t, "node-1", 16, "64Gi")
	e := &env{Cluster: c, host: c.Hosts.Host("fake://node-1")}
	e.r = &Reconciler{Client: c.Client, APIReader: c.Client, Recorder: c.Events, Hypervisors: c.Hosts,
		Domains:  &domain.Builder{APIReader: c.Client, Namespace: fakecluster.CatalogNamespace, SerialLogDir: "/var/log/libvirt/qemu"},
		Launcher: launcher.Config{Image: "pause"}, StopGracePeriod: time.Second,
		// The tests' hook servers listen on loopback, which tenants' hooks may
		// not reach.
		Hooks: hooks.NewCaller(hooks.Egress{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}.Client(), c.Client)}
	e.r.setDefaults()
	return e
}

func newVM(name string) *novacronv1.VirtualMachine {
	v := &novacronv1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID("uid-" + name)}}
	v.Spec.Running = ptr.To(true)
	v.Spec.Template.Spec.Resources = novacronv1.VMResources{CPU: 2, Memory: resource.MustParse("4Gi")}
	v.Spec.Template.Spec.Image.Source = "marketplace://ubuntu"
	v.Spec.Template.Spec.Networks = []novacronv1.Network{{Name: "default", Type: novacronv1.NetworkTypeBridge}}
	return v
}

// create stores the VM and runs the reconcile that adds its finalizer.
func (e *env) create(t *testing.T, v *novacronv1.VirtualMachine) {
	t.Helper()
	require.NoError(t, e.Client.Create(t.Context(), v))
	e.reconcile(t, v.Name)
}

func (e *env) reconcile(t *testing.T, name string) ctrl.Result {
	t.Helper()
	return fakecluster.Reconcile(t, e.r, ns, name)
}

func (e *env) vm(t *testing.T, name string) *novacronv1.VirtualMachine {
	t.Helper()
	v := &novacronv1.VirtualMachine{}
	require.NoError(t, e.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, v))
	return v
}

// bind does the scheduler's part: the launcher pod goes to node.
func (e *env) bind(t *testing.T, name, node string) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{}
	require.NoError(t, e.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: launcher.PodName(name)}, pod))
	pod.Spec.NodeName = node
	require.NoError(t, e.Client.Update(t.Context(), pod))
	return pod
}

func condition(v *novacronv1.VirtualMachine, typ string) metav1.Condition {
	if c := meta.FindStatusCondition(v.Status.Conditions, typ); c != nil {
		return *c
	}
	return metav1.Condition{}
}

// running takes a new VM all the way to Running on node-1.
func (e *env) running(t *testing.T, name string) *novacronv1.VirtualMachine {
	t.Helper()
	e.create(t, newVM(name))
	e.reconcile(t, name)
	e.bind(t, name, "node-1")
	e.reconcile(t, name)
	v := e.vm(t, name)
	require.Equal(t, novacronv1.VMRunning, v.Status.Phase)
	return v
}

func TestAVMIsReservedScheduledThenStartedOnItsNode(t *testing.T) {
	e := newEnv(t)
	e.create(t, newVM("web"))

	// First a launcher pod asks the scheduler for a node.
	e.reconcile(t, "web")
	v := e.vm(t, "web")
	assert.Equal(t, novacronv1.VMScheduling, v.Status.Phase)
	assert.Equal(t, novacronv1.ReasonPending, condition(v, novacronv1.VMConditionScheduled).Reason)
	pod := &corev1.Pod{}
	require.NoError(t, e.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "web-launcher"}, pod))
	assert.True(t, metav1.IsControlledBy(pod, v), "the VM owns its pod")
	assert.Equal(t, novacronv1.DefaultSchedulerName, pod.Spec.SchedulerName)
	assert.True(t, fakecluster.HasEvent(e.EventsSeen(), corev1.EventTypeNormal, novacronv1.ReasonLauncherPodCreated, "web-launcher"))
	_, _, defined := e.host.Domain("team_web")
	assert.False(t, defined, "nothing on a hypervisor before the pod is bound")

	// Bound: the domain is defined (UUID = the VM's UID) and started there.
	e.bind(t, "web", "node-1")
	e.reconcile(t, "web")
	v = e.vm(t, "web")
	assert.Equal(t, novacronv1.VMRunning, v.Status.Phase)
	assert.Equal(t, "node-1", v.Status.NodeName)
	assert.Equal(t, "web-launcher", v.Status.LauncherPod)
	assert.Equal(t, metav1.ConditionTrue, condition(v, novacronv1.ConditionReady).Status)
	assert.Equal(t, novacronv1.ReasonUnsupported, condition(v, novacronv1.VMConditionCloudInit).Reason, "this hypervisor takes no uploads")
	d, st, ok := e.host.Domain("team_web")
	require.True(t, ok)
	assert.Equal(t, provider.StateRunning, st)
	assert.Equal(t, "uid-web", d.UUID)
	assert.Equal(t, int32(2), d.VCPUs)
	assert.Equal(t, domain.StableMAC("uid-web", "default"), d.NICs[0].MAC)
	assert.True(t, e.host.HasVolume("default", "team_web-uid-web-root.qcow2"))
	events := e.EventsSeen()
	for _, reason := range []string{novacronv1.ReasonScheduled, novacronv1.ReasonDefined, novacronv1.ReasonStarted} {
		assert.True(t, fakecluster.HasEvent(events, corev1.EventTypeNormal, reason, ""), reason)
	}

	// Running already: looking again changes nothing on the hypervisor.
	before := e.host.Calls()
	e.reconcile(t, "web")
	after := e.host.Calls()
	for _, mutating := range []string{"Define", "Start", "Shutdown", "Undefine", "EnsureVolume"} {
		assert.Equal(t, before[mutating], after[mutating], mutating)
	}
}

// crashed runs one reconcile that dies inside a hypervisor call (CrashOn).
func (e *env) crashed(t *testing.T, name string) {
	t.Helper()
	defer func() {
		_, ok := recover().(fake.Crash)
		require.True(t, ok, "the reconcile reached the crash")
	}()
	_, _ = e.r.Reconcile(t.Context(), ctrl.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}})
}

// An operator that dies at its first call to the node's hypervisor has
// already recorded the node, so its successor knows where a domain may be.
func TestAnOperatorDyingAtTheHypervisorHasRecordedTheNode(t *testing.T) {
	e := newEnv(t)
	e.create(t, newVM("web"))
	e.reconcile(t, "web")
	e.bind(t, "web", "node-1")
	e.host.CrashOn("State")
	e.crashed(t, "web")
	v := e.vm(t, "web")
	assert.Equal(t, "node-1", v.Status.NodeName)
	assert.Equal(t, novacronv1.VMScheduled, v.Status.Phase)

	e.host.CrashOn("Start")
	e.crashed(t, "web")
	e.reconcile(t, "web")
	_, st, _ := e.host.Domain("team_web")
	assert.Equal(t, provider.StateRunning, st, "the next operator finishes the start on the same node")
	assert.Equal(t, novacronv1.VMRunning, e.vm(t, "web").Status.Phase)
}

// The node is recorded before its hypervisor is touched: an unreachable
// hypervisor leaves the VM Unknown, with its node known, and nothing done.
func TestTheNodeIsRecordedBeforeTheHypervisorIsTouched(t *testing.T) {
	e := newEnv(t)
	e.create(t, newVM("web"))
	e.reconcile(t, "web")
	e.bind(t, "web", "node-1")
	e.host.SetDown(true)
	res := e.reconcile(t, "web")
	v := e.vm(t, "web")
	assert.Equal(t, "node-1", v.Status.NodeName)
	assert.Equal(t, novacronv1.VMUnknown, v.Status.Phase)
	assert.Equal(t, metav1.ConditionFalse, condition(v, novacronv1.VMConditionHypervisorReachable).Status)
	assert.Equal(t, e.r.UnreachableRetry, res.RequeueAfter)
	assert.True(t, fakecluster.HasEvent(e.EventsSeen(), corev1.EventTypeWarning, novacronv1.ReasonHypervisorUnreachable, "node-1"))

	e.host.SetDown(false)
	e.reconcile(t, "web")
	v = e.vm(t, "web")
	assert.Equal(t, novacronv1.VMRunning, v.Status.Phase, "converges once the node answers")
	assert.True(t, fakecluster.HasEvent(e.EventsSeen(), corev1.EventTypeNormal, novacronv1.ReasonHypervisorReachable, "node-1"))
}

func TestStopKeepsTheDisksAndTheNodeAndFreesThePod(t *testing.T) {
	e := newEnv(t)
	v := e.running(t, "web")
	v.Spec.Running = ptr.To(false)
	require.NoError(t, e.Client.Update(t.Context(), v))
	e.reconcile(t, "web")

	v = e.vm(t, "web")
	assert.Equal(t, novacronv1.VMStopped, v.Status.Phase)
	assert.Equal(t, "node-1", v.Status.NodeName, "a stopped VM keeps its node")
	assert.Empty(t, v.Status.LauncherPod)
	_, st, defined := e.host.Domain("team_web")
	assert.True(t, defined)
	assert.Equal(t, provider.StateShutoff, st)
	err := e.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "web-launcher"}, &corev1.Pod{})
	assert.True(t, apierrors.IsNotFound(err), "the pod's capacity is free while stopped")
	events := e.EventsSeen()
	assert.True(t, fakecluster.HasEvent(events, corev1.EventTypeNormal, novacronv1.ReasonStopping, ""))
	assert.True(t, fakecluster.HasEvent(events, corev1.EventTypeNormal, novacronv1.ReasonStopped, "node-1"))

	// Started again, its new pod is pinned to the node its disks are on.
	v.Spec.Running = ptr.To(true)
	require.NoError(t, e.Client.Update(t.Context(), v))
	e.reconcile(t, "web")
	pod := &corev1.Pod{}
	require.NoError(t, e.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "web-launcher"}, pod))
	terms := pod.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	require.Len(t, terms, 1)
	assert.Equal(t, []string{"node-1"}, terms[0].MatchFields[0].Values)
}

func TestDeleteRemovesTheDomainAndItsDisks(t *testing.T) {
	e := newEnv(t)
	v := e.running(t, "web")
	require.NoError(t, e.Client.Delete(t.Context(), v))
	e.reconcile(t, "web")

	_, _, defined := e.host.Domain("team_web")
	assert.False(t, defined)
	for _, vol := range domain.VolumeNames(v) {
		assert.False(t, e.host.HasVolume("default", vol), vol)
	}
	assert.True(t, apierrors.IsNotFound(e.Client.Get(t.Context(), client.ObjectKeyFromObject(v), &novacronv1.VirtualMachine{})), "the finalizer let the VM go")
	assert.True(t, fakecluster.HasEvent(e.EventsSeen(), corev1.EventTypeNormal, novacronv1.ReasonDeleted, "team_web"))
}

// While the hypervisor cannot be reached a deleted VM stays, so no domain is
// left behind untracked.
func TestDeleteWaitsForAnUnreachableHypervisor(t *testing.T) {
	e := newEnv(t)
	v := e.running(t, "web")
	require.NoError(t, e.Client.Delete(t.Context(), v))
	e.host.SetDown(true)
	e.reconcile(t, "web")
	assert.Contains(t, e.vm(t, "web").Finalizers, Finalizer)
	e.host.SetDown(false)
	e.reconcile(t, "web")
	_, _, defined := e.host.Domain("team_web")
	assert.False(t, defined)
}

// A node whose Hypervisor object is gone took its domains along: the delete
// says so and goes on, rather than waiting for a node that will not return.
func TestDeleteGoesOnWhenTheNodesHypervisorIsGone(t *testing.T) {
	e := newEnv(t)
	v := e.running(t, "web")
	require.NoError(t, e.Client.Delete(t.Context(), &novacronv1.Hypervisor{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}))
	require.NoError(t, e.Client.Delete(t.Context(), v))
	e.reconcile(t, "web")
	assert.True(t, apierrors.IsNotFound(e.Client.Get(t.Context(), client.ObjectKeyFromObject(v), &novacronv1.VirtualMachine{})), "the finalizer let the VM go")
	assert.True(t, fakecluster.HasEvent(e.EventsSeen(), corev1.EventTypeWarning, novacronv1.ReasonHypervisorGone, "team_web may remain"))
}

func TestASpecProblemFailsTheVMOnceWithTheField(t *testing.T) {
	e := newEnv(t)
	v := newVM("web")
	v.Spec.Template.Spec.Image.Source = "marketplace://nope"
	e.create(t, v)
	e.reconcile(t, "web")
	e.bind(t, "web", "node-1")
	res := e.reconcile(t, "web")
	v = e.vm(t, "web")
	assert.Equal(t, novacronv1.VMFailed, v.Status.Phase)
	ready := condition(v, novacronv1.ConditionReady)
	assert.Equal(t, novacronv1.ReasonImageNotFound, ready.Reason)
	assert.Contains(t, ready.Message, "known images: ubuntu")
	assert.Equal(t, time.Minute, res.RequeueAfter, "looked at again slowly: a catalog edit heals it")

	first := e.EventsSeen()
	e.reconcile(t, "web")
	assert.True(t, fakecluster.HasEvent(first, corev1.EventTypeWarning, novacronv1.ReasonImageNotFound, "nope"))
	assert.False(t, fakecluster.HasEvent(e.EventsSeen(), corev1.EventTypeWarning, novacronv1.ReasonImageNotFound, ""), "the same problem is told once")
	_, _, defined := e.host.Domain("team_web")
	assert.False(t, defined)
}

func TestAPodThatIsNotTheVMsIsNotUsed(t *testing.T) {
	e := newEnv(t)
	require.NoError(t, e.Client.Create(t.Context(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-launcher", Namespace: ns},
		Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "x", Image: "x"}}}}))
	e.create(t, newVM("web"))
	e.reconcile(t, "web")
	v := e.vm(t, "web")
	assert.Equal(t, novacronv1.VMFailed, v.Status.Phase)
	assert.Equal(t, novacronv1.ReasonLauncherPodConflict, condition(v, novacronv1.ConditionReady).Reason)
	assert.Empty(t, v.Status.NodeName, "a stranger's pod places nothing")
}

func TestACrashedGuestIsStartedAgain(t *testing.T) {
	e := newEnv(t)
	e.running(t, "web")
	e.host.SetState("team_web", provider.StateCrashed)
	e.reconcile(t, "web")
	_, st, _ := e.host.Domain("team_web")
	assert.Equal(t, provider.StateRunning, st)
	assert.True(t, fakecluster.HasEvent(e.EventsSeen(), corev1.EventTypeWarning, novacronv1.ReasonCrashed, "node-1"))
}

// A migration or a restore holds the VM's domain; the VM controller leaves
// it alone until they give it back.
// A VM deleted mid-migration cancels the migration and waits for it to hand
// the VM back before it removes the domain: removed from under the migration
// on its source, the guest could go on running untracked on the target.
func TestDeletingAVMMidMigrationCancelsItFirst(t *testing.T) {
	e := newEnv(t)
	v := e.running(t, "web")
	m := &novacronv1.VirtualMachineMigration{ObjectMeta: metav1.ObjectMeta{Name: "move", Namespace: ns, Finalizers: []string{"novacron.io/migration"}},
		Spec: novacronv1.VirtualMachineMigrationSpec{VMName: "web"}}
	require.NoError(t, e.Client.Create(t.Context(), m))
	m.Status.Phase = novacronv1.MigrationRunning
	require.NoError(t, e.Client.Status().Update(t.Context(), m))
	v.Status.MigrationState = &novacronv1.MigrationState{MigrationName: "move", SourceNode: "node-1", TargetNode: "node-2"}
	require.NoError(t, e.Client.Status().Update(t.Context(), v))

	require.NoError(t, e.Client.Delete(t.Context(), v))
	res := e.reconcile(t, "web")
	assert.Positive(t, res.RequeueAfter, "waits for the migration")
	_, _, defined := e.host.Domain("team_web")
	assert.True(t, defined, "nothing removed while the migration holds the domain")
	require.NoError(t, e.Client.Get(t.Context(), client.ObjectKeyFromObject(m), m))
	assert.False(t, m.DeletionTimestamp.IsZero(), "the migration is cancelled (deleted: it rolls back)")
	assert.Contains(t, e.vm(t, "web").Finalizers, Finalizer)

	// Rolled back: the migration hands the VM back and goes.
	m.Finalizers = nil
	require.NoError(t, e.Client.Update(t.Context(), m))
	e.reconcile(t, "web")
	_, _, defined = e.host.Domain("team_web")
	assert.False(t, defined, "then removed where it is")
	assert.True(t, apierrors.IsNotFound(e.Client.Get(t.Context(), client.ObjectKeyFromObject(v), &novacronv1.VirtualMachine{})))
}

func TestAMigrationOrRestoreHoldsTheDomain(t *testing.T) {
	e := newEnv(t)
	v := e.running(t, "web")
	m := &novacronv1.VirtualMachineMigration{ObjectMeta: metav1.ObjectMeta{Name: "move", Namespace: ns}, Spec: novacronv1.VirtualMachineMigrationSpec{VMName: "web"}}
	require.NoError(t, e.Client.Create(t.Context(), m))
	m.Status.Phase = novacronv1.MigrationRunning
	require.NoError(t, e.Client.Status().Update(t.Context(), m))
	v.Status.MigrationState = &novacronv1.MigrationState{MigrationName: "move", SourceNode: "node-1", TargetNode: "node-2"}
	require.NoError(t, e.Client.Status().Update(t.Context(), v))

	// Stopped by its guest meanwhile: not started again while held.
	e.host.SetState("team_web", provider.StateShutoff)
	before := e.host.Calls()
	e.reconcile(t, "web")
	assert.Equal(t, before, e.host.Calls(), "no call at all to the hypervisor")

	m.Status.Phase = novacronv1.MigrationFailed
	require.NoError(t, e.Client.Status().Update(t.Context(), m))
	e.reconcile(t, "web")
	v = e.vm(t, "web")
	assert.Nil(t, v.Status.MigrationState, "a finished migration's hold is dropped")
	_, st, _ := e.host.Domain("team_web")
	assert.Equal(t, provider.StateRunning, st)

	// A restore's guard works the same way, and a restore that is gone
	// strands nothing.
	v.Annotations = map[string]string{novacronv1.AnnotationRestoring: "gone"}
	require.NoError(t, e.Client.Update(t.Context(), v))
	e.reconcile(t, "web")
	assert.NotContains(t, e.vm(t, "web").Annotations, novacronv1.AnnotationRestoring)
}

// A pod that claims to be the VM's launcher pod (its controller reference)
// but is not the one NovaCron made is deleted, never used: a tenant who may
// create pods cannot pick the node or the devices that way.
func TestAForgedLauncherPodIsReplacedNotUsed(t *testing.T) {
	e := newEnv(t)
	v := newVM("web")
	require.NoError(t, e.Client.Create(t.Context(), v))
	forged := launcher.BuildPod(v, launcher.Config{Image: "pause"}, nil)
	forged.UID = "forged"
	forged.Spec.NodeName = "node-1"
	require.NoError(t, e.Client.Create(t.Context(), forged))
	e.reconcile(t, "web") // finalizer
	e.reconcile(t, "web")

	_, _, defined := e.host.Domain("team_web")
	assert.False(t, defined, "nothing is done on the forged pod's node")
	assert.Empty(t, e.vm(t, "web").Status.NodeName)
	assert.True(t, fakecluster.HasEvent(e.EventsSeen(), corev1.EventTypeWarning, novacronv1.ReasonLauncherPodReplaced, "web-launcher"))
	pod := &corev1.Pod{}
	err := e.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "web-launcher"}, pod)
	assert.True(t, apierrors.IsNotFound(err), "the forged pod is deleted")

	// The VM's own pod follows, recorded as its own.
	e.reconcile(t, "web")
	require.NoError(t, e.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "web-launcher"}, pod))
	assert.Empty(t, pod.Spec.NodeName, "for the scheduler to place")
	assert.Equal(t, pod.UID, e.vm(t, "web").Status.LauncherPodUID)
}

// A running VM whose launcher pod an operator from before pod UIDs were
// recorded made (bound, and named in status.launcherPod) keeps it: upgrades do

// The cache may bring the VM's new launcher pod before the status that
// records it: the pod is the VM's, and is kept.
func TestAPodTheCacheDoesNotRecordYetIsKept(t *testing.T) {
	e := newEnv(t)
	e.create(t, newVM("web"))
	pod := launcher.BuildPod(e.vm(t, "web"), launcher.Config{Image: "pause"}, nil)
	pod.UID = "ours"
	require.NoError(t, e.Client.Create(t.Context(), pod))
	v := e.vm(t, "web")
	v.Status.LauncherPodUID = "ours"
	require.NoError(t, e.Client.Status().Update(t.Context(), v))

	stale := func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
		err := c.Get(ctx, key, obj, opts...)
		if vm, ok := obj.(*novacronv1.VirtualMachine); ok {
			vm.Status.LauncherPodUID = ""
		}
		return err
	}
	e.r.Client = interceptor.NewClient(e.Client.(client.WithWatch), interceptor.Funcs{Get: stale})
	res := e.reconcile(t, "web")
	assert.Positive(t, res.RequeueAfter, "looked at again once the cache has caught up")
	require.NoError(t, e.Client.Get(t.Context(), client.ObjectKeyFromObject(pod), pod), "the pod is kept")
	assert.Equal(t, types.UID("ours"), pod.UID)
	assert.False(t, fakecluster.HasEvent(e.EventsSeen(), corev1.EventTypeWarning, novacronv1.ReasonLauncherPodReplaced, ""))
}

// A launcher pod the namespace's ResourceQuota refuses is shown on the VM,
// naming the quota, and tried again later: nothing the VM watches says when
// room is made.
func TestAQuotaRefusalShowsOnTheVM(t *testing.T) {
	e := newEnv(t)
	e.create(t, newVM("web"))
	full := func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
		if _, ok := obj.(*corev1.Pod); ok {
			return apierrors.NewForbidden(corev1.Resource("pods"), obj.GetName(),
				errors.New("exceeded quota: team-compute, requested: requests.cpu=2, used: requests.cpu=3, limited: requests.cpu=4"))
		}
		return c.Create(ctx, obj, opts...)
	}
	e.r.Client = interceptor.NewClient(e.Client.(client.WithWatch), interceptor.Funcs{Create: full})
	res := e.reconcile(t, "web")
	assert.Equal(t, quotaRetry, res.RequeueAfter)
	v := e.vm(t, "web")
	assert.Equal(t, novacronv1.VMPending, v.Status.Phase)
	c := condition(v, novacronv1.VMConditionScheduled)
	assert.Equal(t, novacronv1.ReasonQuotaExceeded, c.Reason)
	assert.Contains(t, c.Message, "exceeded quota: team-compute")
	assert.True(t, fakecluster.HasEvent(e.EventsSeen(), corev1.EventTypeWarning, novacronv1.ReasonQuotaExceeded, "team-compute"))
	e.reconcile(t, "web")
	assert.False(t, fakecluster.HasEvent(e.EventsSeen(), corev1.EventTypeWarning, novacronv1.ReasonQuotaExceeded, ""), "said once")
}

// not disturb running VMs.
func TestAnUpgradedOperatorAdoptsTheBoundPodOnce(t *testing.T) {
	e := newEnv(t)
	v := e.running(t, "web")
	pod := &corev1.Pod{}
	require.NoError(t, e.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "web-launcher"}, pod))
	require.NoError(t, e.Client.Delete(t.Context(), pod))
	pod.ResourceVersion, pod.UID = "", "made-before-the-upgrade"
	delete(pod.Annotations, novacronv1.AnnotationPodSpecHash)
	require.NoError(t, e.Client.Create(t.Context(), pod))
	v.Status.LauncherPodUID = ""
	require.NoError(t, e.Client.Status().Update(t.Context(), v))

	before := e.host.Calls()
	e.reconcile(t, "web")
	v = e.vm(t, "web")
	assert.Equal(t, novacronv1.VMRunning, v.Status.Phase)
	assert.Equal(t, pod.UID, v.Status.LauncherPodUID, "adopted")
	assert.Equal(t, before["Define"], e.host.Calls()["Define"])
	require.NoError(t, e.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "web-launcher"}, pod))
	assert.True(t, launcher.PodMatches(pod, v), "stamped with the spec it was made from")
	assert.False(t, fakecluster.HasEvent(e.EventsSeen(), corev1.EventTypeWarning, novacronv1.ReasonLauncherPodReplaced, ""))
}

// A spec changed after the pod was placed but before the operator recorded
// it (admission refuses the change only once the VM names its pod) is not
// defined on the old reservation: the pod is made again from the new spec.
func TestAPodFromAnOlderSpecIsReplacedBeforeTheDomainIsDefined(t *testing.T) {
	e := newEnv(t)
	e.create(t, newVM("web"))
	e.reconcile(t, "web")
	e.bind(t, "web", "node-1")
	v := e.vm(t, "web")
	v.Spec.Template.Spec.Resources.CPU = 16
	require.NoError(t, e.Client.Update(t.Context(), v))

	e.reconcile(t, "web")
	_, _, defined := e.host.Domain("team_web")
	assert.False(t, defined, "not defined at 16 vCPUs on a 2-vCPU reservation")
	assert.True(t, fakecluster.HasEvent(e.EventsSeen(), corev1.EventTypeNormal, novacronv1.ReasonLauncherPodReplaced, "older spec"))
	e.reconcile(t, "web")
	pod := &corev1.Pod{}
	require.NoError(t, e.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "web-launcher"}, pod))
	assert.True(t, launcher.PodMatches(pod, e.vm(t, "web")))
	assert.Equal(t, "16", pod.Spec.Containers[0].Resources.Requests.Cpu().String())
}

// A domain NovaCron defined that vanishes from its node (undefined by hand, or
// running elsewhere after a migration nobody recorded) is reported, not
// defined again from a disk that may be stale or blank; once an admin clears
// status.domainDefined, it is defined again.
func TestAVanishedDomainIsReportedNotMadeAgain(t *testing.T) {
	e := newEnv(t)
	v := e.running(t, "web")
	require.True(t, v.Status.DomainDefined)
	require.NoError(t, e.host.Undefine(t.Context(), "team_web"))

	before := e.host.Calls()
	e.reconcile(t, "web")
	e.reconcile(t, "web")
	v = e.vm(t, "web")
	assert.Equal(t, before["Define"], e.host.Calls()["Define"], "not defined again")
	assert.Equal(t, before["EnsureVolume"], e.host.Calls()["EnsureVolume"], "no disk made")
	assert.Equal(t, novacronv1.VMFailed, v.Status.Phase)
	ready := condition(v, novacronv1.ConditionReady)
	assert.Equal(t, novacronv1.ReasonDomainMissing, ready.Reason)
	assert.Contains(t, ready.Message, "node-1")
	assert.Contains(t, ready.Message, "--subresource=status")
	assert.True(t, fakecluster.HasEvent(e.EventsSeen(), corev1.EventTypeWarning, novacronv1.ReasonDomainMissing, "team_web"))

	v.Status.DomainDefined = false
	require.NoError(t, e.Client.Status().Update(t.Context(), v))
	e.reconcile(t, "web")
	_, st, ok := e.host.Domain("team_web")
	require.True(t, ok, "defined again once the admin said so")
	assert.Equal(t, provider.StateRunning, st)
	assert.True(t, e.vm(t, "web").Status.DomainDefined)
}

// A VM from before status.domainDefined existed adopts it from the domain it
// finds, so an upgrade protects running VMs at once.
func TestARunningVMFromBeforeTheUpgradeAdoptsDomainDefined(t *testing.T) {
	e := newEnv(t)
	v := e.running(t, "web")
	v.Status.DomainDefined = false
	require.NoError(t, e.Client.Status().Update(t.Context(), v))
	e.reconcile(t, "web")
	assert.True(t, e.vm(t, "web").Status.DomainDefined)
}

// A disk larger than its node's pool has free fails the VM naming the field,
// and nothing is defined.
func TestADiskLargerThanThePoolFailsTheVM(t *testing.T) {
	e := newEnv(t)
	e.host.SetPoolFree("default", 50<<30)
	v := newVM("big")
	v.Spec.Template.Spec.Resources.Disk = ptr.To(resource.MustParse("100Gi"))
	e.create(t, v)
	e.reconcile(t, "big")
	e.bind(t, "big", "node-1")
	e.reconcile(t, "big")
	v = e.vm(t, "big")
	assert.Equal(t, novacronv1.VMFailed, v.Status.Phase)
	ready := condition(v, novacronv1.ConditionReady)
	assert.Equal(t, novacronv1.ReasonPoolFull, ready.Reason)
	assert.Contains(t, ready.Message, "spec.template.spec.resources.disk: 100Gi")
	assert.Contains(t, ready.Message, "pool default")
	_, _, defined := e.host.Domain("team_big")
	assert.False(t, defined)
}

// A VM made again under an earlier VM's name (its namespace deleted and made
// again while the node was away) gets neither that VM's disk nor its domain:
// its volumes are named by its own UID, and a same-named domain of another
// UUID is refused, not adopted.
func TestALaterVMOfTheSameNameGetsNothingOfTheEarlierOnes(t *testing.T) {
	e := newEnv(t)
	e.host.AddVolume("default", "team_web-root.qcow2") // a disk of this name by the old naming
	e.create(t, newVM("web"))
	e.reconcile(t, "web")
	e.bind(t, "web", "node-1")
	e.reconcile(t, "web")
	v := e.vm(t, "web")
	assert.Equal(t, novacronv1.ReasonDomainMissing, condition(v, novacronv1.ConditionReady).Reason, "whose it is, only an admin knows")
	assert.Contains(t, condition(v, novacronv1.ConditionReady).Message, "team_web-root.qcow2")
	assert.False(t, e.host.HasVolume("default", "team_web-uid-web-root.qcow2"), "no blank disk made beside it")
	_, _, defined := e.host.Domain("team_web")
	assert.False(t, defined)

	// The admin says it is an earlier VM's and keeps it aside.
	require.NoError(t, e.host.DeleteVolume(t.Context(), "default", "team_web-root.qcow2"))
	e.host.AddVolume("default", "kept-aside.qcow2")
	e.reconcile(t, "web")
	v = e.vm(t, "web")
	require.Equal(t, novacronv1.VMRunning, v.Status.Phase)
	d, _, _ := e.host.Domain("team_web")
	assert.Equal(t, "/var/lib/fake/default/team_web-uid-web-root.qcow2", d.Disks[0].Path, "its own disk")
	assert.False(t, v.Status.LegacyVolumeNames)
	require.NoError(t, e.Client.Delete(t.Context(), v))
	e.reconcile(t, "web")

	// The earlier VM's domain is still there, under another UUID.
	require.NoError(t, e.host.Define(t.Context(), provider.Domain{Name: "team_web", UUID: "uid-earlier"}))
	again := newVM("web")
	again.UID = "uid-web-2"
	e.create(t, again)
	e.reconcile(t, "web")
	e.bind(t, "web", "node-1")
	e.reconcile(t, "web")
	got := e.vm(t, "web")
	assert.Equal(t, novacronv1.ReasonDomainConflict, condition(got, novacronv1.ConditionReady).Reason)
	assert.Contains(t, condition(got, novacronv1.ConditionReady).Message, "UUID uid-earlier")
	assert.False(t, got.Status.DomainDefined, "not adopted")
	d, _, _ = e.host.Domain("team_web")
	assert.Equal(t, "uid-earlier", d.UUID, "left as it was")
}

// A VM from before volumes were named by UID keeps its disk: its own domain
// uses the old name, so the VM adopts it once (LegacyVolumeNames), starts
// from it again, and its delete removes it.
func TestAVMFromBeforeUIDNamingKeepsItsDisk(t *testing.T) {
	e := newEnv(t)
	v := e.running(t, "web")
	// As an older operator left it: disk under the old name, no records.
	require.NoError(t, e.host.Shutdown(t.Context(), "team_web", time.Second))
	require.NoError(t, e.host.DeleteVolume(t.Context(), "default", "team_web-uid-web-root.qcow2"))
	e.host.AddVolume("default", "team_web-root.qcow2")
	v.Status.DomainDefined, v.Status.LegacyVolumeNames = false, false
	require.NoError(t, e.Client.Status().Update(t.Context(), v))

	e.reconcile(t, "web")
	v = e.vm(t, "web")
	assert.True(t, v.Status.DomainDefined)
	assert.True(t, v.Status.LegacyVolumeNames, "adopted")
	d, st, _ := e.host.Domain("team_web")
	assert.Equal(t, provider.StateRunning, st)
	assert.Equal(t, "/var/lib/fake/default/team_web-root.qcow2", d.Disks[0].Path, "started from its own disk")
	assert.False(t, e.host.HasVolume("default", "team_web-uid-web-root.qcow2"), "no blank disk made beside it")

	require.NoError(t, e.Client.Delete(t.Context(), v))
	e.reconcile(t, "web")
	assert.False(t, e.host.HasVolume("default", "team_web-root.qcow2"), "deleted with the VM")
}
