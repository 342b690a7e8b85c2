package vm

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

// Launcher pod sizing. The pod reserves the VM's capacity on its node so that
// Kubernetes' own accounting stays true; the VM itself runs in the node's
// hypervisor, not in the pod.
const (
	// memoryOverheadBase and memoryOverheadPerVCPU approximate what QEMU needs
	// beyond guest memory (device emulation, page tables, vCPU threads).
	memoryOverheadBase    = 128 << 20
	memoryOverheadPerVCPU = 8 << 20

	// GPUResourcePrefix names the extended resource a GPU model is counted
	// under: devices.novacron.io/<vendor>-<model>.
	GPUResourcePrefix = "devices.novacron.io/"

	launcherContainer = "launcher"
	componentLauncher = "launcher"
)

// LauncherConfig is the cluster-wide part of launcher pod sizing.
type LauncherConfig struct {
	// Image is the container the pod runs (it only holds the reservation).
	Image string
	// CPUAllocationRatio divides a VM's vCPUs into the pod's CPU request.
	CPUAllocationRatio float64
	// MemoryOvercommitRatio divides a VM's memory into the pod's memory request.
	MemoryOvercommitRatio float64
}

// LauncherPodName is the name of a VM's launcher pod.
func LauncherPodName(vmName string) string {
	const suffix = "-launcher"
	if len(vmName)+len(suffix) <= 253 {
		return vmName + suffix
	}
	sum := sha256.Sum256([]byte(vmName))
	return vmName[:253-len(suffix)-9] + "-" + hex.EncodeToString(sum[:4]) + suffix
}

// GPUResourceName is the extended resource a GPU request is counted under.
func GPUResourceName(d novacronv1.Device) corev1.ResourceName {
	if d.Model == "" {
		return corev1.ResourceName(GPUResourcePrefix + d.Vendor + "-gpu")
	}
	return corev1.ResourceName(GPUResourcePrefix + d.Vendor + "-" + d.Model)
}

// LauncherResources is what a VM's launcher pod requests. vfPools maps each
// sr-iov network to the VF pool (device plugin resource) its
// NetworkAttachmentDefinition names.
func LauncherResources(spec *novacronv1.VirtualMachineInstanceSpec, cfg LauncherConfig, vfPools map[string]string) corev1.ResourceRequirements {
	cpuRatio, memRatio := cfg.CPUAllocationRatio, cfg.MemoryOvercommitRatio
	if cpuRatio <= 0 {
		cpuRatio = 1
	}
	if memRatio <= 0 {
		memRatio = 1
	}
	cpuMilli := int64(float64(spec.Resources.CPU)*1000/cpuRatio + 0.5)
	mem := int64(float64(spec.Resources.Memory.Value())/memRatio+0.5) + memoryOverheadBase + int64(spec.Resources.CPU)*memoryOverheadPerVCPU
	requests := corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewMilliQuantity(cpuMilli, resource.DecimalSI),
		corev1.ResourceMemory: *resource.NewQuantity(mem, resource.BinarySI),
	}
	limits := corev1.ResourceList{}
	add := func(name corev1.ResourceName, n int64) {
		q := requests[name]
		q.Add(*resource.NewQuantity(n, resource.DecimalSI))
		requests[name] = q
		// Extended resources must have limits equal to requests.
		limits[name] = q
	}
	for _, d := range spec.Devices {
		add(GPUResourceName(d), int64(d.Count))
	}
	for _, n := range spec.Networks {
		if pool := vfPools[n.Name]; n.Type == novacronv1.NetworkTypeSRIOV && pool != "" {
			add(corev1.ResourceName(pool), 1)
		}
	}
	return corev1.ResourceRequirements{Requests: requests, Limits: limits}
}

// BuildLauncherPod makes the pod that reserves a VM's capacity and carries its
// placement rules to the scheduler. A VM that already has a node (its domain
// and disks live there) is pinned to it: only a migration moves a VM.
func BuildLauncherPod(vm *novacronv1.VirtualMachine, cfg LauncherConfig, vfPools map[string]string) *corev1.Pod {
	spec := &vm.Spec.Template.Spec
	labels := map[string]string{}
	for k, v := range vm.Spec.Template.Metadata.Labels {
		labels[k] = v
	}
	labels[novacronv1.LabelVM] = vm.Name
	labels[novacronv1.LabelComponent] = componentLauncher
	annotations := map[string]string{}
	for k, v := range vm.Spec.Template.Metadata.Annotations {
		annotations[k] = v
	}
	annotations[novacronv1.AnnotationVCPUs] = strconv.Itoa(int(spec.Resources.CPU))
	annotations[novacronv1.AnnotationMemoryBytes] = strconv.FormatInt(spec.Resources.Memory.Value(), 10)
	schedulerName := spec.SchedulerName
	if schedulerName == "" {
		schedulerName = novacronv1.DefaultSchedulerName
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:        LauncherPodName(vm.Name),
			Namespace:   vm.Namespace,
			Labels:      labels,
			Annotations: annotations,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(vm,
				novacronv1.GroupVersion.WithKind("VirtualMachine"))},
		},
		Spec: corev1.PodSpec{
			SchedulerName:                 schedulerName,
			NodeSelector:                  spec.NodeSelector,
			Affinity:                      spec.Affinity.DeepCopy(),
			Tolerations:                   spec.Tolerations,
			AutomountServiceAccountToken:  ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To[int64](0),
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr.To(true),
				RunAsUser:      ptr.To[int64](65535),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:      launcherContainer,
				Image:     cfg.Image,
				Resources: LauncherResources(spec, cfg, vfPools),
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr.To(false),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
					ReadOnlyRootFilesystem:   ptr.To(true),
				},
			}},
		},
	}
	if vm.Status.NodeName != "" {
		PinToNode(pod, vm.Status.NodeName)
	}
	return pod
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

// schedulingMessage is the scheduler's reason for not placing a pod yet.
func schedulingMessage(pod *corev1.Pod) (reason, message string) {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return c.Reason, c.Message
		}
	}
	return "Pending", fmt.Sprintf("waiting for scheduler %s to place launcher pod %s", pod.Spec.SchedulerName, pod.Name)
}

// stableMAC derives a MAC address from the VM's UID and interface name, so it
// is the same on every start and on every node.
func stableMAC(uid, iface string) string {
	sum := sha256.Sum256([]byte(uid + "/" + iface))
	return strings.ToLower(fmt.Sprintf("52:54:00:%02x:%02x:%02x", sum[0], sum[1], sum[2]))
}
