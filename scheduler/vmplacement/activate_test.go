package vmplacement

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/policies"
)

// activations is the part of the framework's handle the plugin uses to wake
// pods up; the rest is never called here.
type activations struct {
	fwk.Handle
	informers informers.SharedInformerFactory
	woken     []map[string]*corev1.Pod
}

func (a *activations) SharedInformerFactory() informers.SharedInformerFactory { return a.informers }
func (a *activations) Activate(_ klog.Logger, pods map[string]*corev1.Pod) {
	a.woken = append(a.woken, pods)
}

func unstructuredHV(t *testing.T, hv *novacronv1.Hypervisor) *unstructured.Unstructured {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(hv)
	require.NoError(t, err)
	return &unstructured.Unstructured{Object: m}
}

// A Hypervisor that may now take a waiting VM wakes the waiting launcher
// pods up: the scheduler's own informer may have retried them before this
// plugin's cache had the change.
func TestAHypervisorThatMayFitMoreWakesWaitingVMs(t *testing.T) {
	engine, err := policies.NewEngine()
	require.NoError(t, err)
	h := &activations{informers: informers.NewSharedInformerFactory(fake.NewClientset(), 0)}
	pods := h.informers.Core().V1().Pods().Informer().GetIndexer()
	waiting := launcher("waiting")
	waiting.Spec.NodeName = ""
	require.NoError(t, pods.Add(waiting))
	require.NoError(t, pods.Add(launcher("placed")))
	require.NoError(t, pods.Add(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: "ns"}}))
	p := &Plugin{handle: h, engine: engine, hvCache: map[string]*hvEntry{}}
	p.ready.Store(true)

	hv := gpuHost()
	hv.Name = "gpu-1"
	hv.Status.Conditions = []metav1.Condition{{Type: novacronv1.HypervisorConditionReachable, Status: metav1.ConditionFalse, Reason: novacronv1.ReasonUnreachable, Message: "down"}}
	p.cacheHypervisor(unstructuredHV(t, hv))
	require.Len(t, h.woken, 1, "a new node may fit")
	assert.Equal(t, []string{"ns/waiting"}, keys(h.woken[0]), "only launcher pods still waiting for a node")

	hv.Status.Conditions[0].Message = "still down"
	hv.Status.Evacuation = &novacronv1.Evacuation{Reason: novacronv1.EvacuationCordoned}
	p.cacheHypervisor(unstructuredHV(t, hv))
	assert.Len(t, h.woken, 1, "nothing a VM could fit by changed")

	hv.Status.Conditions[0].Status = metav1.ConditionTrue
	p.cacheHypervisor(unstructuredHV(t, hv))
	assert.Len(t, h.woken, 2, "answering again")
	hv.Status.GPUs = hv.Status.GPUs[:1]
	p.cacheHypervisor(unstructuredHV(t, hv))
	assert.Len(t, h.woken, 3, "other devices")
}

func keys(m map[string]*corev1.Pod) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// A launcher pod waits, outside the scheduling cycle, until its VM records
// it; the record arriving sends it to the queue.
func TestOnlyAPodItsVMRecordsIsPlaced(t *testing.T) {
	h := &activations{informers: informers.NewSharedInformerFactory(fake.NewClientset(), 0)}
	pending := vmOf("web")
	pending.Status.LauncherPod, pending.Status.LauncherPodUID = "", ""
	p, idx := withVMCache(t, pending)
	p.handle = h
	p.ready.Store(true)
	pod := launcher("web")
	pod.Spec.NodeName = ""
	require.NoError(t, h.informers.Core().V1().Pods().Informer().GetIndexer().Add(pod))

	st := p.PreEnqueue(t.Context(), pod)
	require.NotNil(t, st)
	assert.Equal(t, fwk.UnschedulableAndUnresolvable, st.Code())
	assert.Contains(t, st.Message(), "does not record pod web")

	recorded := vmOf("web")
	require.NoError(t, idx.Update(recorded))
	p.vmChanged(pending, recorded)
	require.Len(t, h.woken, 1)
	assert.Equal(t, []string{"ns/web"}, keys(h.woken[0]))
	assert.Nil(t, p.PreEnqueue(t.Context(), pod))

	forged := pod.DeepCopy()
	forged.UID = "forged"
	assert.NotNil(t, p.PreEnqueue(t.Context(), forged), "same name and owner, not the recorded pod")
	stats := recorded.DeepCopy()
	stats.Status.Phase = novacronv1.VMRunning
	p.vmChanged(recorded, stats)
	assert.Len(t, h.woken, 1, "a change of nothing PreEnqueue reads wakes nobody")
}
