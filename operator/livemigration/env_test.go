package livemigration

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/domain"
	"github.com/novacron/operator/operator/fakecluster"
	"github.com/novacron/operator/operator/launcher"
	"github.com/novacron/operator/operator/provider"
	"github.com/novacron/operator/operator/provider/fake"
)

const ns = "team"

// env is a cluster of two 16-CPU nodes with a migration controller, and a
// VM "web" running on node-1.
type env struct {
	*fakecluster.Cluster
	r          *Reconciler
	src, tgt   *fake.Host
	domainName string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	c := fakecluster.New(t)
	c.Catalog(t, map[string]string{"ubuntu": "ubuntu.qcow2"})
	c.Node(t, "node-1", 16, "64Gi")
	c.Node(t, "node-2", 16, "64Gi")
	e := &env{Cluster: c, src: c.Hosts.Host("fake://node-1"), tgt: c.Hosts.Host("fake://node-2"), domainName: "team_web"}
	e.r = &Reconciler{Client: c.Client, APIReader: c.Client, Recorder: c.Events, Hypervisors: c.Hosts,
		Targets:  &domain.Builder{APIReader: c.Client, Namespace: fakecluster.CatalogNamespace},
		Launcher: launcher.Config{Image: "pause"}, Poll: time.Millisecond}
	e.r.setDefaults()
	e.runningVM(t, "web", "node-1")
	return e
}

// runningVM makes a migratable VM, running on node with its pod bound there.
func (e *env) runningVM(t *testing.T, name, node string) *novacronv1.VirtualMachine {
	t.Helper()
	v := &novacronv1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID("uid-" + name)}}
	v.Spec.Running = ptr.To(true)
	v.Spec.MigrationPolicy = &novacronv1.MigrationPolicy{AllowLiveMigration: true}
	v.Spec.Template.Spec.Resources = novacronv1.VMResources{CPU: 2, Memory: resource.MustParse("4Gi")}
	v.Spec.Template.Spec.Image.Source = "marketplace://ubuntu"
	require.NoError(t, e.Client.Create(t.Context(), v))
	pod := launcher.BuildPod(v, e.r.Launcher, nil)
	pod.Spec.NodeName = node
	require.NoError(t, e.Client.Create(t.Context(), pod))
	v.Status = novacronv1.VirtualMachineStatus{Phase: novacronv1.VMRunning, NodeName: node, LauncherPod: pod.Name}
	require.NoError(t, e.Client.Status().Update(t.Context(), v))
	h := e.Hosts.Host("fake://" + node)
	require.NoError(t, h.Define(t.Context(), provider.Domain{Name: domain.DomainName(v), UUID: string(v.UID), VCPUs: 2, MemoryBytes: 4 << 30}))
	require.NoError(t, h.Start(t.Context(), domain.DomainName(v)))
	return v
}

func (e *env) migration(t *testing.T, name string, spec novacronv1.VirtualMachineMigrationSpec) {
	t.Helper()
	m := &novacronv1.VirtualMachineMigration{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID("mig-" + name + "-0000000")}, Spec: spec}
	require.NoError(t, e.Client.Create(t.Context(), m))
}

// inFlight is the state a restarted operator finds: the migration recorded
// Running from node-1 to node-2 and the VM held by it, no call in flight.
func (e *env) inFlight(t *testing.T) *novacronv1.VirtualMachineMigration {
	t.Helper()
	e.migration(t, "move", novacronv1.VirtualMachineMigrationSpec{VMName: "web"})
	m := e.get(t, "move")
	m.Finalizers = []string{Finalizer}
	require.NoError(t, e.Client.Update(t.Context(), m))
	m.Status = novacronv1.VirtualMachineMigrationStatus{Phase: novacronv1.MigrationRunning, SourceNode: "node-1", TargetNode: "node-2",
		TargetPod: "web-migration-mig-move", StartTime: ptr.To(metav1.Now())}
	require.NoError(t, e.Client.Status().Update(t.Context(), m))
	v := e.vm(t, "web")
	v.Status.Phase = novacronv1.VMMigrating
	v.Status.MigrationState = &novacronv1.MigrationState{MigrationName: "move", SourceNode: "node-1", TargetNode: "node-2", Phase: novacronv1.MigrationRunning}
	require.NoError(t, e.Client.Status().Update(t.Context(), v))
	target := launcher.BuildPod(v, e.r.Launcher, nil)
	target.Name, target.Spec.NodeName = m.Status.TargetPod, "node-2"
	require.NoError(t, e.Client.Create(t.Context(), target))
	return e.get(t, "move")
}

// targetCopy is an unfinished copy of the guest on node-2, with its disks.
func (e *env) targetCopy(t *testing.T, st provider.DomainState) {
	t.Helper()
	require.NoError(t, e.tgt.Define(t.Context(), provider.Domain{Name: e.domainName, UUID: "uid-web"}))
	if st == provider.StateRunning {
		require.NoError(t, e.tgt.Start(t.Context(), e.domainName))
	}
	_, err := e.tgt.EnsureVolume(t.Context(), provider.Volume{Pool: "default", Name: e.domainName + "-uid-web-root.qcow2", BackingVolume: "ubuntu.qcow2"})
	require.NoError(t, err)
}

func (e *env) reconcile(t *testing.T, name string) ctrl.Result {
	t.Helper()
	return fakecluster.Reconcile(t, e.r, ns, name)
}

func (e *env) get(t *testing.T, name string) *novacronv1.VirtualMachineMigration {
	t.Helper()
	m := &novacronv1.VirtualMachineMigration{}
	require.NoError(t, e.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, m))
	return m
}

func (e *env) vm(t *testing.T, name string) *novacronv1.VirtualMachine {
	t.Helper()
	v := &novacronv1.VirtualMachine{}
	require.NoError(t, e.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, v))
	return v
}

func ready(m *novacronv1.VirtualMachineMigration) metav1.Condition {
	if c := meta.FindStatusCondition(m.Status.Conditions, novacronv1.ConditionReady); c != nil {
		return *c
	}
	return metav1.Condition{}
}
