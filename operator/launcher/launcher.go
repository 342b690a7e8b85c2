// Package launcher is Kubernetes' side of a VM: the launcher pod that
// reserves the VM's capacity on its node and carries its placement rules to
// novacron-scheduler, sized by the VM and the cluster's allocation ratios
// (plus QEMU's overhead), and the DRA claim its devices are allocated
// through. The VM itself runs in the node's hypervisor, not in the pod.
package launcher

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/devices"
)

// Launcher pod sizing. The pod reserves the VM's capacity on its node so that
// Kubernetes' own accounting stays true.
const (
	// memoryOverheadBase and memoryOverheadPerVCPU approximate what QEMU needs
	// beyond guest memory (device emulation, page tables, vCPU threads).
	memoryOverheadBase    = 128 << 20
	memoryOverheadPerVCPU = 8 << 20

	container = "launcher"
)

// Config is the cluster-wide part of launcher pod sizing.
type Config struct {
	// Image is the container the pod runs (it only holds the reservation).
	Image string
	// CPUAllocationRatio divides a VM's vCPUs into the pod's CPU request.
	CPUAllocationRatio float64
	// MemoryOvercommitRatio divides a VM's memory into the pod's memory request.
	MemoryOvercommitRatio float64
	// AlignNUMA has DRA take all of a VM's devices from one NUMA node.
	AlignNUMA bool
}

// PodName is the name of a VM's launcher pod.
func PodName(vmName string) string {
	return novacronv1.DerivedName(vmName, "-launcher", 253)
}

// Requests is what a launcher pod requests for a VM of vcpus and memory
// (bytes) that uses cpu cores and usedMemory bytes of them (its size, or its
// measured use): CPU cores and memory over the cluster's ratios, plus QEMU's
// memory overhead for its vCPUs.
func (c Config) Requests(vcpus int32, cpu, usedMemory float64) (cores, memory float64) {
	cpuRatio, memRatio := c.CPUAllocationRatio, c.MemoryOvercommitRatio
	if cpuRatio <= 0 {
		cpuRatio = 1
	}
	if memRatio <= 0 {
		memRatio = 1
	}
	return cpu / cpuRatio, usedMemory/memRatio + memoryOverheadBase + float64(vcpus)*memoryOverheadPerVCPU
}

// Resources is what a VM's launcher pod requests: vCPUs and memory. Its
// devices are DRA requests (ClaimTemplate), not counted resources.
func Resources(spec *novacronv1.VirtualMachineInstanceSpec, cfg Config) corev1.ResourceRequirements {
	cores, memory := cfg.Requests(spec.Resources.CPU, float64(spec.Resources.CPU), float64(spec.Resources.Memory.Value()))
	return corev1.ResourceRequirements{Requests: corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewMilliQuantity(int64(cores*1000+0.5), resource.DecimalSI),
		corev1.ResourceMemory: *resource.NewQuantity(int64(memory+0.5), resource.BinarySI),
	}}
}

// ClaimTemplate is the ResourceClaimTemplate a VM's launcher pods claim its
// devices by (kube-controller-manager makes each pod its claim from it), nil
// for a VM without devices. vfPools maps each sr-iov network to its VF pool.
// Its name carries a hash of its spec: a template cannot change, and a pod
// made while an older template is still cached must not claim from that.
func ClaimTemplate(vm *novacronv1.VirtualMachine, cfg Config, vfPools map[string]string) *resourceapi.ResourceClaimTemplate {
	req := devices.RequestFor(&vm.Spec.Template.Spec, vfPools)
	if !req.HasDevices() {
		return nil
	}
	spec := devices.ClaimSpec(&req, cfg.AlignNUMA)
	raw, _ := json.Marshal(spec)
	sum := sha256.Sum256(raw)
	return &resourceapi.ResourceClaimTemplate{
		ObjectMeta: metav1.ObjectMeta{
			Name:      novacronv1.DerivedName(vm.Name, "-devices-"+hex.EncodeToString(sum[:4]), 253),
			Namespace: vm.Namespace,
			Labels:    map[string]string{novacronv1.LabelVM: vm.Name},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(vm,
				novacronv1.GroupVersion.WithKind("VirtualMachine"))},
		},
		Spec: resourceapi.ResourceClaimTemplateSpec{Spec: spec},
	}
}

// nodeLost are the taints Kubernetes puts on a node whose kubelet stops
// reporting. Evicting a launcher pod would not stop its guest, only free its
// capacity for another VM while the guest may still run: a lost node's VMs
// are NovaCron's to recover (fenced first), not the taint manager's.
var nodeLost = []string{corev1.TaintNodeNotReady, corev1.TaintNodeUnreachable}

// tolerations are node loss tolerated for good, then the VM's own less any
// that would tolerate node loss only for a while (the taint manager takes
// the shortest time of the tolerations that match a taint).
func tolerations(own []corev1.Toleration) []corev1.Toleration {
	out := make([]corev1.Toleration, 0, len(own)+len(nodeLost))
	for _, key := range nodeLost {
		out = append(out, corev1.Toleration{Key: key, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute})
	}
	for _, t := range own {
		if t.TolerationSeconds != nil && slices.ContainsFunc(nodeLost, func(key string) bool {
			return t.ToleratesTaint(klog.Background(), &corev1.Taint{Key: key, Effect: corev1.TaintEffectNoExecute}, false)
		}) {
			continue
		}
		out = append(out, t)
	}
	return out
}

// BuildPod makes the pod that reserves a VM's capacity and carries its
// placement rules to the scheduler. A VM that already has a node (its domain
// and disks live there) is pinned to it: only a migration moves a VM.
func BuildPod(vm *novacronv1.VirtualMachine, cfg Config, vfPools map[string]string) *corev1.Pod {
	spec := &vm.Spec.Template.Spec
	// What the tenant wrote, but never NovaCron's own keys (admission refuses
	// them too): the scheduler and the operator trust those on this pod.
	labels := map[string]string{}
	for k, v := range vm.Spec.Template.Metadata.Labels {
		if !novacronv1.IsReserved(k) {
			labels[k] = v
		}
	}
	labels[novacronv1.LabelVM] = vm.Name
	labels[novacronv1.LabelComponent] = novacronv1.ComponentLauncher
	annotations := map[string]string{}
	for k, v := range vm.Spec.Template.Metadata.Annotations {
		if !novacronv1.IsReserved(k) {
			annotations[k] = v
		}
	}
	annotations[novacronv1.AnnotationPodSpecHash] = SpecHash(vm)
	schedulerName := spec.SchedulerName
	if schedulerName == "" {
		schedulerName = novacronv1.DefaultSchedulerName
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:        PodName(vm.Name),
			Namespace:   vm.Namespace,
			Labels:      labels,
			Annotations: annotations,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(vm,
				novacronv1.GroupVersion.WithKind("VirtualMachine"))},
		},
		Spec: corev1.PodSpec{
			SchedulerName:                 schedulerName,
			NodeSelector:                  maps.Clone(spec.NodeSelector),
			Affinity:                      spec.Affinity.DeepCopy(),
			Tolerations:                   tolerations(spec.Tolerations),
			AutomountServiceAccountToken:  ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To[int64](0),
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr.To(true),
				RunAsUser:      ptr.To[int64](65535),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:      container,
				Image:     cfg.Image,
				Resources: Resources(spec, cfg),
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr.To(false),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
					ReadOnlyRootFilesystem:   ptr.To(true),
				},
			}},
		},
	}
	if t := ClaimTemplate(vm, cfg, vfPools); t != nil {
		pod.Spec.ResourceClaims = []corev1.PodResourceClaim{{Name: devices.ClaimName, ResourceClaimTemplateName: &t.Name}}
		pod.Spec.Containers[0].Resources.Claims = []corev1.ResourceClaim{{Name: devices.ClaimName}}
	}
	if vm.Status.NodeName != "" {
		PinToNode(pod, vm.Status.NodeName)
	}
	return pod
}

// ClaimName is the name of the ResourceClaim kube-controller-manager made
// the pod from its ClaimTemplate, "" while there is none.
func ClaimName(pod *corev1.Pod) string {
	for _, s := range pod.Status.ResourceClaimStatuses {
		if s.Name == devices.ClaimName && s.ResourceClaimName != nil {
			return *s.ResourceClaimName
		}
	}
	return ""
}

// SpecHash is a hash of what in the VM's spec a launcher pod reserves or is
// placed by, so a pod made from an older spec can be told apart. (Template
// labels are not in it: other VMs' affinity reads them, but a VM's own
// reservation does not depend on them.)
func SpecHash(vm *novacronv1.VirtualMachine) string {
	spec := &vm.Spec.Template.Spec
	raw, _ := json.Marshal(struct {
		Resources     novacronv1.VMResources
		Devices       []novacronv1.Device
		Networks      []novacronv1.Network
		NodeSelector  map[string]string
		Affinity      *corev1.Affinity
		Tolerations   []corev1.Toleration
		SchedulerName string
	}{spec.Resources, spec.Devices, spec.Networks, spec.NodeSelector, spec.Affinity, spec.Tolerations, spec.SchedulerName})
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:8])
}

// PodMatches says whether pod was made from the VM's current spec.
func PodMatches(pod *corev1.Pod, vm *novacronv1.VirtualMachine) bool {
	return pod.Annotations[novacronv1.AnnotationPodSpecHash] == SpecHash(vm)
}

// PinToNode adds a required node affinity to exactly one node, ANDed with the
// VM's own rules (added to each of its terms, which are ORed).
func PinToNode(pod *corev1.Pod, node string) {
	req := corev1.NodeSelectorRequirement{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{node}}
	if pod.Spec.Affinity == nil {
		pod.Spec.Affinity = &corev1.Affinity{}
	}
	if pod.Spec.Affinity.NodeAffinity == nil {
		pod.Spec.Affinity.NodeAffinity = &corev1.NodeAffinity{}
	}
	na := pod.Spec.Affinity.NodeAffinity
	if na.RequiredDuringSchedulingIgnoredDuringExecution == nil || len(na.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms) == 0 {
		na.RequiredDuringSchedulingIgnoredDuringExecution = &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{}}}
	}
	terms := na.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	for i := range terms {
		terms[i].MatchFields = append(terms[i].MatchFields, req)
	}
}

// SchedulingMessage is the scheduler's reason for not placing a pod yet,
// tidied for a person (see tidy).
func SchedulingMessage(pod *corev1.Pod) (reason, message string) {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return c.Reason, tidy(c.Message)
		}
	}
	return novacronv1.ReasonPending, fmt.Sprintf("waiting for scheduler %s to place launcher pod %s", pod.Spec.SchedulerName, pod.Name)
}

// nodeCount is the scheduler's count before a reason that names its node
// ("1 gpu-1: 0/2 tesla-t4 free"): always 1, so only noise.
var nodeCount = regexp.MustCompile(`(: |, )1 ([a-z0-9]([-a-z0-9.]*[a-z0-9])?: )`)

// tidy drops what the scheduler's summary says that helps no one reading it
// on a VM: the count before each node's own reason, and what preemption
// made of it (a launcher pod preempts nothing).
func tidy(msg string) string {
	if i := strings.Index(msg, " preemption: "); i >= 0 {
		msg = msg[:i]
	}
	return nodeCount.ReplaceAllString(msg, "$1$2")
}
