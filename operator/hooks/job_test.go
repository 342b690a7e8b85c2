package hooks

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

func jobHook(spec corev1.PodSpec) *novacronv1.LifecycleHook {
	return &novacronv1.LifecycleHook{TimeoutSeconds: 10, Retries: 2, Job: &novacronv1.JobHook{Template: novacronv1.JobTemplate{
		Metadata: novacronv1.TemplateMeta{Labels: map[string]string{"app": "db", novacronv1.LabelComponent: novacronv1.ComponentLauncher}},
		Spec:     batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: spec}}}}}
}

func TestAHookJobRunsAsTheHookAccountWithoutAToken(t *testing.T) {
	job, err := BuildJob(vm(5), "preStart", jobHook(corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}))
	require.NoError(t, err)
	assert.Equal(t, "web-prestart-5", job.Name)
	pod := job.Spec.Template.Spec
	assert.Equal(t, ServiceAccount, pod.ServiceAccountName)
	assert.False(t, *pod.AutomountServiceAccountToken)
	assert.False(t, *pod.Containers[0].SecurityContext.AllowPrivilegeEscalation)
	assert.Equal(t, corev1.RestartPolicyNever, pod.RestartPolicy)
	assert.Equal(t, int64(30), *job.Spec.ActiveDeadlineSeconds)
	assert.Equal(t, novacronv1.ComponentHook, job.Labels[novacronv1.LabelComponent], "the template's reserved keys are not taken")
	assert.Equal(t, "db", job.Labels["app"])
}

func TestAHookJobMayTakeNothingOfTheNodeNorAnIdentity(t *testing.T) {
	root := corev1.PodSpec{
		HostNetwork: true, HostPID: true, HostIPC: true, NodeName: "compute-1", ServiceAccountName: "deployer",
		AutomountServiceAccountToken: ptr.To(true),
		Volumes: []corev1.Volume{
			{Name: "root", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}},
			{Name: "token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "t"}}}}}},
		},
		InitContainers: []corev1.Container{{Name: "i", SecurityContext: &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"SYS_ADMIN"}}}}},
		Containers: []corev1.Container{{Name: "c", Ports: []corev1.ContainerPort{{ContainerPort: 22, HostPort: 22}},
			SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true), AllowPrivilegeEscalation: ptr.To(true), ProcMount: ptr.To(corev1.UnmaskedProcMount)}}},
	}
	_, err := BuildJob(vm(1), "preStart", jobHook(root))
	require.Error(t, err)
	errs := CheckJobSpec(field.NewPath("job"), &jobHook(root).Job.Template.Spec)
	var fields []string
	for _, e := range errs {
		fields = append(fields, strings.TrimPrefix(e.Field, "job.template.spec."))
	}
	assert.Equal(t, []string{"hostNetwork", "hostPID", "hostIPC", "nodeName", "serviceAccountName", "automountServiceAccountToken",
		"volumes[0].hostPath", "volumes[1].projected.sources[0].serviceAccountToken",
		"initContainers[0].securityContext.capabilities.add",
		"containers[0].ports[0].hostPort", "containers[0].securityContext.privileged", "containers[0].securityContext.allowPrivilegeEscalation",
		"containers[0].securityContext.procMount"}, fields)
}

// A hook Job's name is also a label value: at most 63 characters, however
// long the VM's name, and distinct for distinct VMs.
func TestJobNamesFitALabel(t *testing.T) {
	long := func(name string) *novacronv1.VirtualMachine {
		return &novacronv1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 12}}
	}
	assert.Equal(t, "web-prestart-12", JobName(long("web"), "preStart"))
	a := JobName(long(strings.Repeat("a", 62)+"x"), "preStop")
	b := JobName(long(strings.Repeat("a", 62)+"y"), "preStop")
	assert.LessOrEqual(t, len(a), 63)
	assert.NotEqual(t, a, b)
	assert.True(t, strings.HasSuffix(a, "-prestop-12"), a)
	assert.Empty(t, validation.IsDNS1123Label(a))
}
