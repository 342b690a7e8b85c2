// Package fakecluster is an in-memory cluster for the controllers' unit
// tests: controller-runtime's fake client with NovaCron's types, their status
// subresources and the manager's VMs-by-node index, an event recorder that
// keeps what it is told, and in-memory hypervisors (provider/fake). The
// envtest suites in test/ run the real API server; these run in milliseconds.
package fakecluster

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/domain"
	"github.com/novacron/operator/operator/hypervisors"
	fakeprovider "github.com/novacron/operator/operator/provider/fake"
)

// Cluster is the fake client, events and hypervisors of one test.
type Cluster struct {
	Client client.WithWatch
	Events *events.FakeRecorder
	Hosts  *fakeprovider.Connector

	images []string // volumes staged on every node made after Catalog
}

// CatalogNamespace is where Catalog puts the image catalog (the operator's
// namespace).
const CatalogNamespace = "novacron-system"

// Catalog installs the image catalog with images (name -> volume), and stages
// their volumes in the pool of every node Node makes from then on.
func (c *Cluster) Catalog(t *testing.T, images map[string]string) {
	t.Helper()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: domain.CatalogConfigMap, Namespace: CatalogNamespace}, Data: map[string]string{}}
	for name, vol := range images {
		cm.Data[name] = "volume: " + vol + "\n"
		c.images = append(c.images, vol)
	}
	if err := c.Client.Create(t.Context(), cm); err != nil {
		t.Fatalf("creating the image catalog: %v", err)
	}
}

// Reconcile runs one reconcile of namespace/name and fails the test on an
// error.
func Reconcile(t *testing.T, r reconcile.Reconciler, namespace, name string) reconcile.Result {
	t.Helper()
	res, err := r.Reconcile(t.Context(), reconcile.Request{NamespacedName: types.NamespacedName{Namespace: namespace, Name: name}})
	if err != nil {
		t.Fatalf("reconciling %s/%s: %v", namespace, name, err)
	}
	return res
}

// New makes a cluster holding objs.
func New(t *testing.T, objs ...client.Object) *Cluster {
	t.Helper()
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(novacronv1.AddToScheme(s))
	c := fake.NewClientBuilder().WithScheme(s).
		WithObjects(objs...).
		WithStatusSubresource(&novacronv1.VirtualMachine{}, &novacronv1.VirtualMachineMigration{}, &novacronv1.VirtualMachineSnapshot{},
			&novacronv1.VirtualMachineRestore{}, &novacronv1.Hypervisor{}, &novacronv1.VirtualMachinePolicy{}, &corev1.Pod{}, &corev1.Node{}, &resourceapi.ResourceClaim{}).
		WithIndex(&novacronv1.VirtualMachine{}, hypervisors.NodeNameIndex, hypervisors.VMNodeName).
		WithIndex(&resourceapi.ResourceSlice{}, hypervisors.SliceNodeIndex, hypervisors.SliceNodeName).
		Build()
	return &Cluster{Client: c, Events: events.NewFakeRecorder(1000), Hosts: fakeprovider.NewConnector()}
}

// EventsSeen drains the events recorded so far, each "Type Reason message".
func (c *Cluster) EventsSeen() []string {
	var out []string
	for {
		select {
		case e := <-c.Events.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

// HasEvent says whether one of events starts with "Type Reason" and
// contains text.
func HasEvent(events []string, typ, reason, text string) bool {
	for _, e := range events {
		if strings.HasPrefix(e, typ+" "+reason+" ") && strings.Contains(e, text) {
			return true
		}
	}
	return false
}

// Node is a Ready Node and its Hypervisor (URI fake://NAME, on c.Hosts), as
// `novacron dev` registers them: cpus CPUs and memory, CPU model
// Icelake-Server.
func (c *Cluster) Node(t *testing.T, name string, cpus int64, memory string) (*corev1.Node, *novacronv1.Hypervisor) {
	t.Helper()
	alloc := corev1.ResourceList{corev1.ResourceCPU: *resource.NewQuantity(cpus, resource.DecimalSI), corev1.ResourceMemory: resource.MustParse(memory)}
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{Capacity: alloc, Allocatable: alloc,
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}}
	hv := &novacronv1.Hypervisor{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: novacronv1.HypervisorSpec{URI: "fake://" + name, StoragePool: "default"},
		Status: novacronv1.HypervisorStatus{Capacity: alloc.DeepCopy(), CPUModel: "Icelake-Server"}}
	for _, o := range []client.Object{n, hv} {
		if err := c.Client.Create(t.Context(), o); err != nil {
			t.Fatalf("creating %s: %v", name, err)
		}
	}
	for _, vol := range c.images {
		c.Hosts.Host(hv.Spec.URI).AddVolume("default", vol)
	}
	return n, hv
}
