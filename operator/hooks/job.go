package hooks

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

// ServiceAccount is the identity every hook pod runs as, in the VM's
// namespace. Kubernetes has no verb for "may run pods as this
// ServiceAccount", so the tenant does not choose one: any other would lend
// the hook the rights of whatever the namespace's accounts hold. It has no
// rights and its token is not mounted.
const ServiceAccount = "novacron-hook"

// CheckJobSpec refuses what a tenant's hook Job may not have. The operator
// creates the Job with its own rights, and admission has checked only that
// the tenant may create Jobs at all, so the pod is held to a restricted
// profile: nothing of the node (host namespaces, paths, ports, a chosen
// node), no privilege, no identity but ServiceAccount. Each error names the
// field under path (the hook's template.spec).
func CheckJobSpec(path *field.Path, spec *batchv1.JobSpec) field.ErrorList {
	var errs field.ErrorList
	pod := &spec.Template.Spec
	p := path.Child("template", "spec")
	forbid := func(f *field.Path, why string) { errs = append(errs, field.Forbidden(f, why)) }
	for _, ns := range []struct {
		name string
		set  bool
	}{{"hostNetwork", pod.HostNetwork}, {"hostPID", pod.HostPID}, {"hostIPC", pod.HostIPC}} {
		if ns.set {
			forbid(p.Child(ns.name), "hook pods may not share the node's namespaces")
		}
	}
	if pod.NodeName != "" {
		forbid(p.Child("nodeName"), "hook pods are placed by the scheduler, not on a chosen node")
	}
	if pod.ServiceAccountName != "" || pod.DeprecatedServiceAccount != "" {
		forbid(p.Child("serviceAccountName"), fmt.Sprintf("hook pods run as ServiceAccount %s, which NovaCron sets", ServiceAccount))
	}
	if ptr.Deref(pod.AutomountServiceAccountToken, false) {
		forbid(p.Child("automountServiceAccountToken"), "hook pods get no API token")
	}
	if sc := pod.SecurityContext; sc != nil && sc.SELinuxOptions != nil {
		forbid(p.Child("securityContext", "seLinuxOptions"), "hook pods keep the runtime's SELinux labels")
	}
	for i, v := range pod.Volumes {
		vp := p.Child("volumes").Index(i)
		if v.HostPath != nil {
			forbid(vp.Child("hostPath"), "hook pods may not mount the node's files")
		}
		if v.Projected != nil {
			for j, s := range v.Projected.Sources {
				if s.ServiceAccountToken != nil {
					forbid(vp.Child("projected", "sources").Index(j).Child("serviceAccountToken"), "hook pods get no API token")
				}
			}
		}
	}
	for _, list := range []struct {
		name       string
		containers []corev1.Container
	}{{"initContainers", pod.InitContainers}, {"containers", pod.Containers}} {
		for i := range list.containers {
			errs = append(errs, checkContainer(p.Child(list.name).Index(i), &list.containers[i])...)
		}
	}
	for _, kv := range []struct {
		child string
		keys  map[string]string
	}{{"labels", spec.Template.Labels}, {"annotations", spec.Template.Annotations}} {
		for _, k := range slices.Sorted(maps.Keys(kv.keys)) {
			if novacronv1.IsReserved(k) {
				forbid(path.Child("template", "metadata", kv.child).Key(k), "the novacron.io/ prefix is reserved for NovaCron")
			}
		}
	}
	if len(pod.EphemeralContainers) > 0 {
		forbid(p.Child("ephemeralContainers"), "hook pods have no ephemeral containers")
	}
	return errs
}

func checkContainer(path *field.Path, c *corev1.Container) field.ErrorList {
	var errs field.ErrorList
	for i, port := range c.Ports {
		if port.HostPort != 0 {
			errs = append(errs, field.Forbidden(path.Child("ports").Index(i).Child("hostPort"), "hook pods may not open the node's ports"))
		}
	}
	sc := c.SecurityContext
	if sc == nil {
		return errs
	}
	sp := path.Child("securityContext")
	if ptr.Deref(sc.Privileged, false) {
		errs = append(errs, field.Forbidden(sp.Child("privileged"), "hook pods are not privileged"))
	}
	if ptr.Deref(sc.AllowPrivilegeEscalation, false) {
		errs = append(errs, field.Forbidden(sp.Child("allowPrivilegeEscalation"), "hook pods may not gain privileges"))
	}
	if sc.Capabilities != nil && len(sc.Capabilities.Add) > 0 {
		errs = append(errs, field.Forbidden(sp.Child("capabilities", "add"), "hook pods add no capabilities"))
	}
	if sc.ProcMount != nil && *sc.ProcMount != corev1.DefaultProcMount {
		errs = append(errs, field.Forbidden(sp.Child("procMount"), "hook pods keep the default /proc"))
	}
	if sc.SELinuxOptions != nil {
		errs = append(errs, field.Forbidden(sp.Child("seLinuxOptions"), "hook pods keep the runtime's SELinux labels"))
	}
	return errs
}

// JobName is the Job that runs a hook for one generation of the VM: a new
// start or stop (a changed spec) gets a new Job; the same one is found again
// after an operator restart.
func JobName(vm *novacronv1.VirtualMachine, kind string) string {
	// 63: the Job's name is also its pods' job-name label.
	return novacronv1.DerivedName(vm.Name, fmt.Sprintf("-%s-%d", strings.ToLower(kind), vm.Generation), 63)
}

// BuildJob is the Job that runs a VM's hook, or why the hook may not run
// (CheckJobSpec; admission refuses the same, this catches VMs admitted
// before it did). Whatever the template says, the pod runs as
// ServiceAccount without a token, and does not escalate.
func BuildJob(vm *novacronv1.VirtualMachine, kind string, hook *novacronv1.LifecycleHook) (*batchv1.Job, error) {
	tpl := &hook.Job.Template
	path := field.NewPath("spec", "template", "spec", "lifecycle", kind, "job", "template", "spec")
	if errs := CheckJobSpec(path, &tpl.Spec); len(errs) > 0 {
		return nil, errs.ToAggregate()
	}
	labels := map[string]string{}
	for k, v := range tpl.Metadata.Labels {
		if !novacronv1.IsReserved(k) {
			labels[k] = v
		}
	}
	labels[novacronv1.LabelVM] = vm.Name
	labels[novacronv1.LabelComponent] = novacronv1.ComponentHook
	labels[novacronv1.LabelHook] = kind
	annotations := map[string]string{}
	for k, v := range tpl.Metadata.Annotations {
		if !novacronv1.IsReserved(k) {
			annotations[k] = v
		}
	}
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{
			Name: JobName(vm, kind), Namespace: vm.Namespace, Labels: labels, Annotations: annotations,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(vm, novacronv1.GroupVersion.WithKind("VirtualMachine"))},
		},
		Spec: *tpl.Spec.DeepCopy(),
	}
	if job.Spec.ActiveDeadlineSeconds == nil && hook.TimeoutSeconds > 0 {
		job.Spec.ActiveDeadlineSeconds = ptr.To(int64(hook.TimeoutSeconds) * int64(hook.Retries+1))
	}
	if job.Spec.BackoffLimit == nil {
		job.Spec.BackoffLimit = ptr.To(hook.Retries)
	}
	pod := &job.Spec.Template.Spec
	if pod.RestartPolicy == "" {
		pod.RestartPolicy = corev1.RestartPolicyNever
	}
	pod.ServiceAccountName = ServiceAccount
	pod.AutomountServiceAccountToken = ptr.To(false)
	for _, cs := range [][]corev1.Container{pod.InitContainers, pod.Containers} {
		for i := range cs {
			if cs[i].SecurityContext == nil {
				cs[i].SecurityContext = &corev1.SecurityContext{}
			}
			cs[i].SecurityContext.AllowPrivilegeEscalation = ptr.To(false)
		}
	}
	return job, nil
}
