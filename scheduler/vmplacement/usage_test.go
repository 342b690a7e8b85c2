package vmplacement

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/kubernetes/pkg/scheduler/framework"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

func launcher(uid string, devices ...string) *corev1.Pod {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: uid, Namespace: "ns", UID: types.UID(uid),
		Labels:      map[string]string{novacronv1.LabelComponent: novacronv1.ComponentLauncher, novacronv1.LabelVM: uid},
		Annotations: map[string]string{novacronv1.AnnotationVCPUs: "2", novacronv1.AnnotationMemoryBytes: "1024"}},
		Spec: corev1.PodSpec{NodeName: "gpu-1"}}
	if len(devices) > 0 {
		var a novacronv1.DeviceAssignment
		for _, d := range devices {
			a.GPUs = append(a.GPUs, novacronv1.AssignedDevice{Type: novacronv1.DeviceTypeGPU, PCIAddress: d})
		}
		raw, _ := json.Marshal(a)
		pod.Annotations[novacronv1.AnnotationAssignedDevices] = string(raw)
	}
	return pod
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

// A device reserved for a pod stays taken until the snapshot the scheduler
// works from carries the pod's annotation, whatever the informers heard.
func TestReservationLastsUntilTheSnapshotCountsThePod(t *testing.T) {
	p := &Plugin{reserve: map[string]map[types.UID][]string{}}
	e := &hvEntry{hv: gpuHost(), devices: 6}
	next := launcher("next")

	// Reserved, assumed: the snapshot has the pod, not yet its annotation.
	p.hold("gpu-1", "a", []string{"0000:3b:00.0"})
	u := p.usage(e, nodeInfo(launcher("a")), next)
	assert.True(t, u.devices.Has("0000:3b:00.0"))
	assert.Equal(t, int64(1), p.reserved.Load())
	assert.Equal(t, int64(2), u.vcpus)

	// The pod itself does not count its own reservation (Reserve again).
	assert.False(t, p.usage(e, nodeInfo(launcher("a")), launcher("a")).devices.Has("0000:3b:00.0"))

	// Bound with its annotation in the snapshot: counted from the pod, the
	// reservation is over.
	u = p.usage(e, nodeInfo(launcher("a", "0000:3b:00.0")), next)
	assert.True(t, u.devices.Has("0000:3b:00.0"))
	assert.Zero(t, p.reserved.Load())
	assert.Empty(t, p.reserve)

	// Unreserve (or the pod's deletion) gives a device back at once.
	p.hold("gpu-1", "b", []string{"0000:3c:00.0"})
	p.forget("b")
	require.Zero(t, p.reserved.Load())
	assert.False(t, p.usage(e, nodeInfo(launcher("b")), next).devices.Has("0000:3c:00.0"))
}
