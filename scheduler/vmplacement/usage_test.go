package vmplacement

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/tools/cache"
	"k8s.io/kubernetes/pkg/scheduler/framework"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

// launcher is a bound launcher pod the way the operator makes one: controlled
// by its VM (vmOf), which records its UID.
func launcher(uid string) *corev1.Pod {
	vm := vmOf(uid)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: uid, Namespace: "ns", UID: types.UID(uid),
		Labels:          map[string]string{novacronv1.LabelComponent: novacronv1.ComponentLauncher, novacronv1.LabelVM: uid},
		Annotations:     map[string]string{},
		OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(vm, novacronv1.GroupVersion.WithKind("VirtualMachine"))}},
		Spec: corev1.PodSpec{NodeName: "gpu-1"}}
	return pod
}

// vmOf is the VM of launcher(name): 2 vCPUs, 1Ki of memory, recording the
// pod.
func vmOf(name string) *novacronv1.VirtualMachine {
	vm := &novacronv1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID("vm-" + name)}}
	vm.Spec.Template.Spec.Resources = novacronv1.VMResources{CPU: 2, Memory: resource.MustParse("1Ki")}
	vm.Status.LauncherPod, vm.Status.LauncherPodUID = name, types.UID(name)
	return vm
}

// withVMs is a plugin whose VM cache holds vms.
func withVMs(t *testing.T, vms ...*novacronv1.VirtualMachine) *Plugin {
	p, _ := withVMCache(t, vms...)
	return p
}

func withVMCache(t *testing.T, vms ...*novacronv1.VirtualMachine) (*Plugin, cache.Indexer) {
	t.Helper()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, vm := range vms {
		require.NoError(t, idx.Add(vm))
	}
	return &Plugin{vms: cache.NewGenericLister(idx, vmsGVR.GroupResource())}, idx
}

// gpuHost is a node with three T4s.
func gpuHost() *novacronv1.Hypervisor {
	hv := &novacronv1.Hypervisor{}
	for _, pci := range []string{"0000:3b:00.0", "0000:3c:00.0", "0000:3d:00.0"} {
		hv.Status.GPUs = append(hv.Status.GPUs, novacronv1.GPU{Vendor: "nvidia", Model: "tesla-t4", PCIAddress: pci})
	}
	return hv
}

func nodeInfo(pods ...*corev1.Pod) *framework.NodeInfo {
	ni := framework.NewNodeInfo(pods...)
	ni.SetNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "gpu-1"}})
	return ni
}

// A node's devices in use are what DRA allocated there this cycle (to any
// pod, VM or not), not what a VM or pod says.
func TestDevicesInUseAreDRAsAllocations(t *testing.T) {
	recorded := vmOf("a")
	recorded.Status.Devices = []novacronv1.AssignedDevice{{Type: novacronv1.DeviceTypeGPU, PCIAddress: "0000:3b:00.0"}}
	p := withVMs(t, recorded)
	e := &hvEntry{hv: gpuHost(), devices: 3}
	s := &cycleState{allocated: map[string]sets.Set[string]{"gpu-1": sets.New("0000:3c:00.0"), "gpu-2": sets.New("0000:3d:00.0")}}
	u := p.usage(s, e, nodeInfo(launcher("a")))
	assert.Equal(t, []string{"0000:3c:00.0"}, sets.List(u.devices), "this node's allocations only")
	assert.Equal(t, int64(2), u.vcpus)
}

// Anyone who may make pods can label one a launcher: only the pod a VM
// records counts, by the VM's size.
func TestOnlyThePodsVMsRecordCountAndByTheVMsOwnSize(t *testing.T) {
	p := withVMs(t, vmOf("a"), vmOf("b"), vmOf("c"))
	e := &hvEntry{hv: gpuHost(), devices: 3}

	own := launcher("a")
	own.Spec.Containers = []corev1.Container{{Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1m")}}}}

	forged := launcher("b") // b's name and owner, not the pod b records
	forged.UID, forged.Name = "forged", "b-launcher-2"

	noOwner := launcher("c")
	noOwner.OwnerReferences = nil

	orphan := launcher("gone") // no such VM

	u := p.podUsage(e, nodeInfo(own, forged, noOwner, orphan))
	assert.Equal(t, int64(2), u.vcpus, "a alone, by its spec")
	assert.Equal(t, int64(1024), u.memBytes)
}

// A pod becomes the VM's when the VM records it; the cached use must see
// that without a change of the node's pods.
func TestARecordArrivingLaterIsCounted(t *testing.T) {
	vm := vmOf("a")
	vm.Status.LauncherPodUID = ""
	vm.Status.LauncherPod = ""
	p, idx := withVMCache(t, vm)
	e := &hvEntry{hv: gpuHost(), devices: 3}
	ni := nodeInfo(launcher("a"))
	assert.Zero(t, p.podUsage(e, ni).vcpus)

	recorded := vmOf("a")
	require.NoError(t, idx.Update(recorded))
	p.vmChanged(vm, recorded)
	assert.Equal(t, int64(2), p.podUsage(e, ni).vcpus)
}
