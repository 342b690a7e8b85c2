package launcher

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

func vm() *novacronv1.VirtualMachine {
	v := &novacronv1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "team", UID: "uid-web"}}
	v.Spec.Template.Spec.Resources = novacronv1.VMResources{CPU: 2, Memory: resource.MustParse("4Gi")}
	return v
}

// The pod requests the VM's size over the cluster's ratios, plus what QEMU
// needs beyond guest memory: 128Mi and 8Mi per vCPU.
func TestRequestsAddQEMUsOverhead(t *testing.T) {
	spec := &vm().Spec.Template.Spec
	r := Resources(spec, Config{})
	assert.Equal(t, "2", r.Requests.Cpu().String())
	assert.Equal(t, int64(4240<<20), r.Requests.Memory().Value(), "4Gi + 128Mi + 2 x 8Mi")

	r = Resources(spec, Config{CPUAllocationRatio: 4, MemoryOvercommitRatio: 2})
	assert.Equal(t, "500m", r.Requests.Cpu().String())
	assert.Equal(t, int64(2192<<20), r.Requests.Memory().Value(), "the overhead is not overcommitted")

	cores, mem := Config{CPUAllocationRatio: 2}.Requests(2, 0.5, 1<<30)
	assert.InDelta(t, 0.25, cores, 1e-9, "measured use goes through the same sums")
	assert.InDelta(t, float64(1<<30+144<<20), mem, 1)
}

// A VM's GPUs and VFs are one DRA claim of its pod, made from the VM's
// template: a request per GPU entry (by vendor and model) and per sr-iov
// network (by its VF pool); the pod requests no extended resources.
func TestDevicesAreADRAClaimFromTheVMsTemplate(t *testing.T) {
	v := vm()
	v.Spec.Template.Spec.Devices = []novacronv1.Device{{Type: novacronv1.DeviceTypeGPU, Vendor: "nvidia", Model: "tesla-t4", Count: 2}}
	v.Spec.Template.Spec.Networks = []novacronv1.Network{{Name: "default", Type: novacronv1.NetworkTypeBridge}, {Name: "data", Type: novacronv1.NetworkTypeSRIOV}}
	pools := map[string]string{"data": "intel.com/sriov_data"}
	tmpl := ClaimTemplate(v, Config{}, pools)
	require.NotNil(t, tmpl)
	assert.True(t, metav1.IsControlledBy(tmpl, v))
	assert.Equal(t, "team", tmpl.Namespace)
	reqs := tmpl.Spec.Spec.Devices.Requests
	require.Len(t, reqs, 2)
	assert.Equal(t, "gpu.devices.novacron.io", reqs[0].Exactly.DeviceClassName)
	assert.Equal(t, int64(2), reqs[0].Exactly.Count)
	assert.Equal(t, `device.attributes["devices.novacron.io"].vendor == "nvidia" && device.attributes["devices.novacron.io"].model == "tesla-t4"`, reqs[0].Exactly.Selectors[0].CEL.Expression)
	assert.Equal(t, "vf.devices.novacron.io", reqs[1].Exactly.DeviceClassName)
	assert.Equal(t, `device.attributes["devices.novacron.io"].resourceName == "intel.com/sriov_data"`, reqs[1].Exactly.Selectors[0].CEL.Expression)
	assert.Empty(t, tmpl.Spec.Spec.Devices.Constraints)

	aligned := ClaimTemplate(v, Config{AlignNUMA: true}, pools)
	require.Len(t, aligned.Spec.Spec.Devices.Constraints, 1)
	assert.Equal(t, "resource.kubernetes.io/numaNode", string(*aligned.Spec.Spec.Devices.Constraints[0].MatchAttribute))
	assert.NotEqual(t, tmpl.Name, aligned.Name, "a template cannot change: another claim is another name")

	pod := BuildPod(v, Config{}, pools)
	require.Len(t, pod.Spec.ResourceClaims, 1)
	assert.Equal(t, tmpl.Name, *pod.Spec.ResourceClaims[0].ResourceClaimTemplateName)
	assert.Equal(t, []corev1.ResourceClaim{{Name: "devices"}}, pod.Spec.Containers[0].Resources.Claims)
	assert.Len(t, pod.Spec.Containers[0].Resources.Requests, 2, "vCPUs and memory only")
	assert.Empty(t, pod.Spec.Containers[0].Resources.Limits, "no limits: the pod only reserves")

	assert.Nil(t, ClaimTemplate(vm(), Config{}, nil), "a VM without devices claims none")
	assert.Empty(t, BuildPod(vm(), Config{}, nil).Spec.ResourceClaims)
}

func TestThePodCarriesTheVMAndIsPinnedOnceItHasANode(t *testing.T) {
	v := vm()
	v.Spec.Template.Spec.NodeSelector = map[string]string{"zone": "a"}
	pod := BuildPod(v, Config{Image: "pause"}, nil)
	assert.Equal(t, "web-launcher", pod.Name)
	assert.Equal(t, novacronv1.ComponentLauncher, pod.Labels[novacronv1.LabelComponent])
	assert.Equal(t, "web", pod.Labels[novacronv1.LabelVM])
	assert.True(t, PodMatches(pod, v))
	assert.True(t, metav1.IsControlledBy(pod, v))
	assert.Equal(t, novacronv1.DefaultSchedulerName, pod.Spec.SchedulerName)
	assert.Nil(t, pod.Spec.Affinity, "free to go anywhere the selector allows")
	assert.False(t, *pod.Spec.AutomountServiceAccountToken)

	v.Status.NodeName = "node-1"
	v.Spec.Template.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
		NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "gpu", Operator: corev1.NodeSelectorOpExists}}}, {}}}}}
	pod = BuildPod(v, Config{}, nil)
	terms := pod.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	require.Len(t, terms, 2)
	for _, term := range terms {
		assert.Equal(t, []string{"node-1"}, term.MatchFields[0].Values, "the pin is ANDed into every term")
	}
	assert.Len(t, v.Spec.Template.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchFields, 0, "the VM's own affinity is not changed")
}

func TestLongVMNamesMakeValidPodNames(t *testing.T) {
	long := strings.Repeat("a", 250)
	name := PodName(long)
	assert.LessOrEqual(t, len(name), 253)
	assert.True(t, strings.HasSuffix(name, "-launcher"))
	assert.NotEqual(t, name, PodName(strings.Repeat("a", 249)+"b"), "different VMs, different pods")
}

func TestSchedulingMessagesAreTidiedForPeople(t *testing.T) {
	pod := &corev1.Pod{Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable,
		Message: "0/3 nodes are available: 1 compute-1: no tesla-t4, 1 gpu-1: 1/2 tesla-t4 free, 2 needed, 1 node(s) had untolerated taint {x: y}. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."}}}}
	reason, msg := SchedulingMessage(pod)
	assert.Equal(t, corev1.PodReasonUnschedulable, reason)
	assert.Equal(t, "0/3 nodes are available: compute-1: no tesla-t4, gpu-1: 1/2 tesla-t4 free, 2 needed, 1 node(s) had untolerated taint {x: y}.", msg,
		"a count before a node's own reason goes; other plugins' counts stay")
}

// Nothing the tenant writes carries NovaCron's own keys onto the pod.
func TestTheTenantsTemplateCannotForgeNovaCronsKeys(t *testing.T) {
	v := vm()
	v.Spec.Template.Metadata.Labels = map[string]string{"app": "web", novacronv1.LabelComponent: "hook", novacronv1.LabelVM: "other"}
	v.Spec.Template.Metadata.Annotations = map[string]string{"team": "a", novacronv1.AnnotationPodSpecHash: "forged"}
	pod := BuildPod(v, Config{}, nil)
	assert.Equal(t, "web", pod.Labels["app"])
	assert.Equal(t, novacronv1.ComponentLauncher, pod.Labels[novacronv1.LabelComponent])
	assert.Equal(t, "web", pod.Labels[novacronv1.LabelVM])
	assert.Equal(t, "a", pod.Annotations["team"])
	assert.Equal(t, SpecHash(v), pod.Annotations[novacronv1.AnnotationPodSpecHash])
}

// A pod tells which spec it was made from: size, devices, networks and
// placement change the hash; what the pod does not depend on does not.
func TestTheHashFollowsWhatThePodIsMadeFrom(t *testing.T) {
	v := vm()
	pod := BuildPod(v, Config{}, nil)
	same := v.DeepCopy()
	same.Spec.Template.Spec.Image.Source = "marketplace://debian-12"
	same.Spec.Template.Spec.UserData = "#cloud-config"
	assert.True(t, PodMatches(pod, same))
	for name, change := range map[string]func(*novacronv1.VirtualMachine){
		"cpu": func(v *novacronv1.VirtualMachine) { v.Spec.Template.Spec.Resources.CPU = 64 },
		"devices": func(v *novacronv1.VirtualMachine) {
			v.Spec.Template.Spec.Devices = []novacronv1.Device{{Vendor: "nvidia", Count: 1}}
		},
		"selector": func(v *novacronv1.VirtualMachine) { v.Spec.Template.Spec.NodeSelector = map[string]string{"zone": "b"} },
	} {
		changed := v.DeepCopy()
		change(changed)
		assert.False(t, PodMatches(pod, changed), name)
	}
	delete(pod.Annotations, novacronv1.AnnotationPodSpecHash)
	assert.False(t, PodMatches(pod, v), "a pod without the hash is adopted by stamping it, never by default")
}

// A launcher pod is not evicted from a node that stops reporting (its guest
// would run on while its capacity went to another VM): it tolerates
// not-ready and unreachable for good, whatever the VM said.
func TestALostNodeDoesNotEvictTheLauncherPod(t *testing.T) {
	v := vm()
	v.Spec.Template.Spec.Tolerations = []corev1.Toleration{
		{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](30)},
		{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists, TolerationSeconds: ptr.To[int64](30)},       // any effect
		{Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](10)}, // any key
		{Key: "dedicated", Value: "vms", Effect: corev1.TaintEffectNoSchedule},
		{Key: "maintenance", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](60)},
	}
	pod := BuildPod(v, Config{Image: "pause"}, nil)
	assert.Equal(t, []corev1.Toleration{
		{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
		{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
		{Key: "dedicated", Value: "vms", Effect: corev1.TaintEffectNoSchedule},
		{Key: "maintenance", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](60)},
	}, pod.Spec.Tolerations, "timed tolerations of node loss, by key or by any key, are dropped")
}
