package nodeagent

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/devices/agent"
	"github.com/novacron/operator/devices/discovery"
	"github.com/novacron/operator/devices/sysfs"
	"github.com/novacron/operator/test/testenv"
)

const timeout = 30 * time.Second

// t4Node is a node with two T4s bound to vfio-pci over two NUMA nodes and
// an E810 port with two VFs.
func t4Node() sysfs.Machine {
	return sysfs.Machine{NUMANodes: 2, Devices: []sysfs.PCIDevice{
		{Address: "0000:3b:00.0", Vendor: "10de", Device: "1eb8", Class: "030200", NUMANode: 0, Driver: "vfio-pci"},
		{Address: "0000:af:00.0", Vendor: "10de", Device: "1eb8", Class: "030200", NUMANode: 1, Driver: "vfio-pci"},
		{Address: "0000:5e:00.0", Vendor: "8086", Device: "1593", Class: "020000", NUMANode: 0, Driver: "ice", NetDevs: []string{"ens1f0"}, LinkUp: true},
		{Address: "0000:5e:01.0", Vendor: "8086", Device: "1889", Class: "020000", NUMANode: 0, Driver: "vfio-pci", PhysFn: "0000:5e:00.0"},
		{Address: "0000:5e:01.1", Vendor: "8086", Device: "1889", Class: "020000", NUMANode: 0, Driver: "vfio-pci", PhysFn: "0000:5e:00.0"},
	}}
}

// t4Devices are what t4Node publishes, by device name.
var t4Devices = []string{"gpu-0000-3b-00-0", "gpu-0000-af-00-0", "vf-0000-5e-01-0", "vf-0000-5e-01-1"}

type node struct {
	name, sys string
	kube      kubernetes.Interface
}

// newNode registers a Node and its Hypervisor, as the platform team does,
// and lays out its sysfs.
func newNode(t *testing.T, name string, m sysfs.Machine) *node {
	t.Helper()
	ctx := suite.Ctx
	c := suite.Env.Client
	require.NoError(t, c.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}))
	require.NoError(t, c.Create(ctx, &novacronv1.Hypervisor{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: novacronv1.HypervisorSpec{URI: "test:///default"}}))
	n := &node{name: name, sys: filepath.Join(t.TempDir(), "sys")}
	require.NoError(t, sysfs.Write(n.sys, m))
	var err error
	n.kube, err = kubernetes.NewForConfig(suite.Env.Config)
	require.NoError(t, err)
	return n
}

func (n *node) agent(t *testing.T) *agent.Agent {
	t.Helper()
	a, err := agent.New(suite.Ctx, agent.Options{
		Node: n.name, Namespace: "default", SysfsRoot: n.sys, Interval: time.Second,
		Config: discovery.Config{SRIOV: []discovery.SRIOVConfig{{PF: "ens1f0", ResourceName: "intel.com/sriov_data"}}},
		Client: suite.Env.Client, Kube: n.kube,
	})
	require.NoError(t, err)
	t.Cleanup(a.Stop)
	return a
}

func (n *node) hypervisor(t *testing.T) *novacronv1.Hypervisor {
	t.Helper()
	var hv novacronv1.Hypervisor
	require.NoError(t, suite.Env.Client.Get(suite.Ctx, client.ObjectKey{Name: n.name}, &hv))
	return &hv
}

// published is the node's NovaCron devices in its ResourceSlices now, by
// name.
func (n *node) published() (map[string]resourceapi.Device, error) {
	list, err := n.kube.ResourceV1().ResourceSlices().List(suite.Ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + n.name})
	if err != nil {
		return nil, err
	}
	got := map[string]resourceapi.Device{}
	for _, s := range list.Items {
		if s.Spec.Driver == discovery.DriverName {
			for _, d := range s.Spec.Devices {
				got[d.Name] = d
			}
		}
	}
	return got, nil
}

// devices waits for the node's NovaCron ResourceSlices to hold exactly the
// devices named and, when ok is given, for ok to hold of them; it returns
// them by name.
func (n *node) devices(t *testing.T, names []string, ok ...func(map[string]resourceapi.Device) bool) map[string]resourceapi.Device {
	t.Helper()
	var got map[string]resourceapi.Device
	require.Eventually(t, func() bool {
		var err error
		if got, err = n.published(); err != nil || len(got) != len(names) {
			return false
		}
		for _, name := range names {
			if _, found := got[name]; !found {
				return false
			}
		}
		return len(ok) == 0 || ok[0](got)
	}, timeout, testenv.Poll, "the slices of %s hold %v (last: %d devices)", n.name, names, len(got))
	return got
}

func taints(d resourceapi.Device) []string {
	var out []string
	for _, t := range d.Taints {
		out = append(out, t.Key+":"+string(t.Effect))
	}
	return out
}

// A node's devices are published as its Hypervisor's inventory and its
// ResourceSlice, and it heartbeats; the operator's own status fields are
// left alone.
func TestTheAgentPublishesItsNode(t *testing.T) {
	ctx, c := suite.Ctx, suite.Env.Client
	n := newNode(t, "gpu-node-1", t4Node())
	// The operator's part of the status, written before the agent runs.
	hv := n.hypervisor(t)
	hv.Status.CPUModel = "Icelake-Server"
	hv.Status.Conditions = []metav1.Condition{{Type: "Reachable", Status: metav1.ConditionTrue, Reason: "Connected", LastTransitionTime: metav1.Now()}}
	require.NoError(t, c.Status().Update(ctx, hv, client.FieldOwner("novacron-operator")))

	a := n.agent(t)
	require.NoError(t, a.Round(ctx))
	hv = n.hypervisor(t)
	require.Len(t, hv.Status.GPUs, 2)
	assert.Equal(t, novacronv1.GPU{Vendor: "nvidia", Model: "1eb8", PCIAddress: "0000:af:00.0", NUMANode: 1}, hv.Status.GPUs[1],
		"without pci.ids the model is the device ID")
	require.Len(t, hv.Status.SRIOV, 1)
	assert.Len(t, hv.Status.SRIOV[0].VirtualFunctions, 2)
	assert.Equal(t, int32(2), hv.Status.NUMANodes)
	assert.Equal(t, "Icelake-Server", hv.Status.CPUModel, "the operator's fields stay")
	assert.Len(t, hv.Status.Conditions, 1)
	var managers []string
	for _, f := range hv.ManagedFields {
		if f.Subresource == "status" {
			managers = append(managers, f.Manager+"/"+string(f.Operation))
		}
	}
	assert.ElementsMatch(t, []string{"novacron-operator/Update", "novacron-node/Apply"}, managers)

	devs := n.devices(t, t4Devices)
	assert.Equal(t, int64(1), *devs["gpu-0000-af-00-0"].Attributes["resource.kubernetes.io/numaNode"].IntValue)
	assert.Equal(t, "0000:af:00.0", *devs["gpu-0000-af-00-0"].Attributes["resource.kubernetes.io/pciBusID"].StringValue)
	assert.Equal(t, "intel.com/sriov_data", *devs["vf-0000-5e-01-1"].Attributes["resourceName"].StringValue)

	var lease coordinationv1.Lease
	require.NoError(t, c.Get(ctx, client.ObjectKey{Namespace: "default", Name: agent.LeaseName(n.name)}, &lease))
	assert.Equal(t, n.name, *lease.Spec.HolderIdentity)
	first := lease.Spec.RenewTime.Time
	require.NoError(t, a.Round(ctx))
	require.NoError(t, c.Get(ctx, client.ObjectKey{Namespace: "default", Name: agent.LeaseName(n.name)}, &lease))
	assert.True(t, lease.Spec.RenewTime.After(first), "each round renews the heartbeat")
}

// A device gone from the bus stays published with a NoSchedule taint (a VM
// may hold it: NoExecute would evict its launcher pod), across an agent
// restart, and is offered again untainted once back; its Hypervisor entry
// goes meanwhile.
func TestAVanishedDeviceIsTaintedNoSchedule(t *testing.T) {
	ctx := suite.Ctx
	n := newNode(t, "gpu-node-2", t4Node())
	a := n.agent(t)
	require.NoError(t, a.Round(ctx))
	n.devices(t, t4Devices)

	link := filepath.Join(n.sys, "bus", "pci", "devices", "0000:af:00.0")
	target, err := os.Readlink(link)
	require.NoError(t, err)
	require.NoError(t, os.Remove(link))
	require.NoError(t, a.Round(ctx))
	n.devices(t, t4Devices, func(d map[string]resourceapi.Device) bool {
		return assert.ObjectsAreEqual([]string{discovery.TaintVanished + ":NoSchedule"}, taints(d["gpu-0000-af-00-0"])) && len(d["gpu-0000-3b-00-0"].Taints) == 0
	})
	assert.Len(t, n.hypervisor(t).Status.GPUs, 1)

	a.Stop()
	a = n.agent(t)
	require.NoError(t, a.Round(ctx))
	assert.Equal(t, []string{discovery.TaintVanished + ":NoSchedule"}, taints(n.devices(t, t4Devices)["gpu-0000-af-00-0"]),
		"a restarted agent still knows it")

	require.NoError(t, os.Symlink(target, link))
	require.NoError(t, a.Round(ctx))
	n.devices(t, t4Devices, func(d map[string]resourceapi.Device) bool { return len(d["gpu-0000-af-00-0"].Taints) == 0 })
	assert.Len(t, n.hypervisor(t).Status.GPUs, 2)
}

// A GPU that NVIDIA's DRA driver already publishes on the node (its vfio
// shape: the standard pciBusID attribute) is not published a second time,
// so the scheduler can never allocate it twice; nor is it taken for gone.
func TestADeviceAnotherDriverPublishesIsNotOfferedTwice(t *testing.T) {
	ctx := suite.Ctx
	n := newNode(t, "gpu-node-3", t4Node())
	a := n.agent(t)
	require.NoError(t, a.Round(ctx))
	n.devices(t, t4Devices)

	theirs := &resourceapi.ResourceSlice{ObjectMeta: metav1.ObjectMeta{Name: "gpu-node-3-vfio-gpu-nvidia-com"}, Spec: resourceapi.ResourceSliceSpec{
		Driver: "vfio.gpu.nvidia.com", NodeName: ptr.To(n.name), Pool: resourceapi.ResourcePool{Name: n.name, ResourceSliceCount: 1},
		Devices: []resourceapi.Device{{Name: "gpu-0", Attributes: map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{
			"type":                            {StringValue: ptr.To("vfio")},
			"resource.kubernetes.io/pciBusID": {StringValue: ptr.To("0000:3b:00.0")},
		}}},
	}}
	_, err := n.kube.ResourceV1().ResourceSlices().Create(ctx, theirs, metav1.CreateOptions{})
	require.NoError(t, err)
	require.NoError(t, a.Round(ctx))
	devs := n.devices(t, []string{"gpu-0000-af-00-0", "vf-0000-5e-01-0", "vf-0000-5e-01-1"})
	assert.Empty(t, devs["gpu-0000-af-00-0"].Taints)
	assert.Len(t, n.hypervisor(t).Status.GPUs, 1)
}

// Without its Hypervisor the agent says what is missing.
func TestAnUnregisteredNodeIsReported(t *testing.T) {
	n := newNode(t, "gpu-node-4", t4Node())
	require.NoError(t, suite.Env.Client.Delete(suite.Ctx, n.hypervisor(t)))
	assert.ErrorContains(t, n.agent(t).Round(suite.Ctx), "no Hypervisor gpu-node-4: the platform team registers the node")
}

// A device still on the bus that is no longer offered (the platform team
// excludes it in the device config, read again every round) is withdrawn,
// not tainted as gone; with no GPU left, the Hypervisor lists none (the
// agent no longer applies the list, and nobody else owns it).
func TestAWithdrawnDeviceIsRemovedAndTheConfigIsReread(t *testing.T) {
	ctx := suite.Ctx
	n := newNode(t, "gpu-node-5", t4Node())
	cfg := filepath.Join(t.TempDir(), "devices.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("sriov: [{pf: ens1f0, resourceName: intel.com/sriov_data}]\n"), 0o644))
	a, err := agent.New(ctx, agent.Options{Node: n.name, Namespace: "default", SysfsRoot: n.sys, ConfigPath: cfg, Interval: time.Second,
		Client: suite.Env.Client, Kube: n.kube})
	require.NoError(t, err)
	t.Cleanup(a.Stop)
	require.NoError(t, a.Round(ctx))
	n.devices(t, t4Devices)
	require.Len(t, n.hypervisor(t).Status.GPUs, 2)

	require.NoError(t, os.WriteFile(cfg, []byte("sriov: [{pf: ens1f0, resourceName: intel.com/sriov_data}]\nexclude: [\"0000:3b:00.0\", \"0000:af:00.0\"]\n"), 0o644))
	require.NoError(t, a.Round(ctx))
	devs := n.devices(t, []string{"vf-0000-5e-01-0", "vf-0000-5e-01-1"})
	for _, d := range devs {
		assert.Empty(t, d.Taints)
	}
	hv := n.hypervisor(t)
	assert.Empty(t, hv.Status.GPUs, "no GPU left to list")
	assert.Len(t, hv.Status.SRIOV, 1)

	require.NoError(t, os.WriteFile(cfg, []byte("sriov: [{pf: ens1f0, resourceNam: typo}]\n"), 0o644))
	assert.ErrorContains(t, a.Round(ctx), `unknown field "resourceNam"`, "a broken config is reported")
	var lease coordinationv1.Lease
	require.NoError(t, suite.Env.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: agent.LeaseName(n.name)}, &lease), "and the heartbeat goes on")
	n.devices(t, []string{"vf-0000-5e-01-0", "vf-0000-5e-01-1"})
}

// A node with more devices than one slice may hold (64 with taints)
// publishes them in several slices of one pool.
func TestManyDevicesGoInSeveralSlices(t *testing.T) {
	ctx := suite.Ctx
	m := sysfs.Machine{NUMANodes: 1, Devices: []sysfs.PCIDevice{
		{Address: "0000:5e:00.0", Vendor: "8086", Device: "1593", Class: "020000", NUMANode: 0, Driver: "ice", NetDevs: []string{"ens1f0"}, LinkUp: true}}}
	var names []string
	for i := range 100 {
		addr := fmt.Sprintf("0000:5e:%02x.%d", 1+i/8, i%8)
		m.Devices = append(m.Devices, sysfs.PCIDevice{Address: addr, Vendor: "8086", Device: "1889", Class: "020000", NUMANode: 0, Driver: "vfio-pci", PhysFn: "0000:5e:00.0"})
		names = append(names, discovery.DeviceName(discovery.TypeVF, addr))
	}
	n := newNode(t, "vf-node-1", m)
	a := n.agent(t)
	require.NoError(t, a.Round(ctx))
	n.devices(t, names)
	list, err := n.kube.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + n.name})
	require.NoError(t, err)
	assert.Len(t, list.Items, 2)
	for _, s := range list.Items {
		assert.LessOrEqual(t, len(s.Spec.Devices), discovery.MaxDevicesPerSlice)
		assert.Equal(t, int64(2), s.Spec.Pool.ResourceSliceCount)
	}
}
