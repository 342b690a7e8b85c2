package security

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/domain"
	"github.com/novacron/operator/operator/launcher"
)

const victimGPU = `{"gpus":[{"type":"gpu","vendor":"nvidia","model":"tesla-t4","pciAddress":"0000:3b:00.0"}]}`

// Finding 1: NovaCron's own keys on the launcher pod (where the device
// assignment once was) cannot come from the tenant's template, and the
// scheduler that writes them cannot be swapped for one that does not count.
func TestATenantCannotWriteNovaCronsKeysOrPickTheScheduler(t *testing.T) {
	ctx := context.Background()
	mallory := tenant(t, "mallory-keys", "mallory")

	v := newVM("mallory-keys", "forged-annotation")
	v.Spec.Template.Metadata.Annotations = map[string]string{"novacron.io/assigned-devices": victimGPU}
	msg := refused(t, mallory.Create(ctx, v), `spec.template.metadata.annotations[novacron.io/assigned-devices]`)
	assert.Contains(t, msg, "the novacron.io/ prefix is reserved for NovaCron")

	v = newVM("mallory-keys", "forged-label")
	v.Spec.Template.Metadata.Labels = map[string]string{novacronv1.LabelComponent: novacronv1.ComponentHook}
	refused(t, mallory.Create(ctx, v), `spec.template.metadata.labels[novacron.io/component]`)

	v = newVM("mallory-keys", "own-scheduler")
	v.Spec.Template.Spec.SchedulerName = "default-scheduler"
	msg = refused(t, mallory.Create(ctx, v), "spec.template.spec.schedulerName")
	assert.Contains(t, msg, `supported values: "novacron-scheduler"`)
}

// Tenants cannot write status, where NovaCron keeps what it checked (the
// devices, the launcher pod it made).
func TestATenantCannotWriteStatus(t *testing.T) {
	ctx := context.Background()
	mallory := tenant(t, "mallory-status", "mallory")
	v := newVM("mallory-status", "web")
	v.Spec.Running = ptr.To(false)
	require.NoError(t, mallory.Create(ctx, v))
	v.Status.Devices = []novacronv1.AssignedDevice{{Type: novacronv1.DeviceTypeGPU, PCIAddress: "0000:3b:00.0"}}
	v.Status.LauncherPodUID = "forged"
	refused(t, mallory.Status().Update(ctx, v), "virtualmachines/status")
}

// Finding 1, with pod rights (Kubernetes' edit role): a hand-made pod of
// the launcher pod's name, controlled by the VM, bound to the GPU node and
// with the annotation that once named devices, is replaced, never used.
func TestAHandMadeLauncherPodIsReplacedNotAdopted(t *testing.T) {
	ctx := context.Background()
	eve := tenant(t, "eve-pods", "eve")
	grant(t, "eve-pods", "eve", podRights...)
	v := newVM("eve-pods", "web")
	v.Spec.Running = ptr.To(false)
	require.NoError(t, eve.Create(ctx, v))
	require.NoError(t, eve.Get(ctx, client.ObjectKeyFromObject(v), v))

	forged := launcher.BuildPod(v, launcher.Config{Image: "pause"}, nil)
	forged.Spec.NodeName = "gpu-1"
	forged.Annotations["novacron.io/assigned-devices"] = victimGPU
	require.NoError(t, eve.Create(ctx, forged))
	require.NoError(t, eve.Patch(ctx, v, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"running":true}}`))))

	got := running(t, v)
	assert.Empty(t, got.Status.Devices)
	assert.NotEqual(t, forged.UID, got.Status.LauncherPodUID, "the VM runs on a pod NovaCron made")
	d, ok := defined.domain(domain.DomainName(got))
	require.True(t, ok)
	assert.Empty(t, d.HostDevices, "no GPU reached the domain")
	// Deleted, whether the stopped VM's cleanup or the starting VM's check
	// came to it first (only the second says so in an event).
	var pod corev1.Pod
	err := eve.Get(ctx, client.ObjectKeyFromObject(forged), &pod)
	assert.True(t, apierrors.IsNotFound(err) || pod.UID != forged.UID, "the forged pod is gone")
}

// Finding 7: pods anyone with pod rights can make, labelled as launchers and
// annotated to look like a node full of VMs, count for nothing: a GPU VM is
// still placed on the node whose GPUs they claim, and a forged pod aimed at
// novacron-scheduler is never placed.
func TestTheSchedulerCountsOnlyPodsVMsRecord(t *testing.T) {
	ctx := context.Background()
	eve := tenant(t, "eve-sched", "eve")
	grant(t, "eve-sched", "eve", podRights...)
	decoy := newVM("eve-sched", "decoy")
	decoy.Spec.Running = ptr.To(false)
	decoy.Spec.Template.Spec.Devices = gpuVM("", "").Spec.Template.Spec.Devices
	require.NoError(t, eve.Create(ctx, decoy))
	require.NoError(t, eve.Get(ctx, client.ObjectKeyFromObject(decoy), decoy))

	forgedPod := func(name, node string) *corev1.Pod {
		p := launcher.BuildPod(decoy, launcher.Config{Image: "pause"}, nil)
		p.Name, p.Spec.NodeName = name, node
		p.Annotations["novacron.io/assigned-devices"] = `{"gpus":[{"type":"gpu","pciAddress":"0000:3b:00.0"},{"type":"gpu","pciAddress":"0000:3c:00.0"}]}`
		require.NoError(t, eve.Create(ctx, p))
		return p
	}
	forgedPod("squatter", "gpu-1")
	unplaced := forgedPod("queue-jumper", "")

	alice := tenant(t, "alice-sched", "alice")
	v := gpuVM("alice-sched", "train")
	require.NoError(t, alice.Create(ctx, v))
	got := running(t, v)
	assert.Equal(t, "gpu-1", got.Status.NodeName)
	require.Len(t, got.Status.Devices, 1)

	require.NoError(t, eve.Get(ctx, client.ObjectKeyFromObject(unplaced), unplaced))
	assert.Empty(t, unplaced.Spec.NodeName, "a pod its VM does not record is never placed")
}

// Finding 5: a VM that failed keeps its launcher pod, which the scheduler
// and ResourceQuota counted at its size: it cannot grow until it is stopped.
func TestAFailedVMCannotGrowOnItsReservation(t *testing.T) {
	ctx := context.Background()
	mallory := tenant(t, "mallory-resize", "mallory")
	v := newVM("mallory-resize", "web")
	v.Spec.Template.Spec.Image.Source = "marketplace://no-such-image"
	require.NoError(t, mallory.Create(ctx, v))
	failed := env.WaitVM(t, client.ObjectKeyFromObject(v), timeout, "Failed with its pod bound", func(v *novacronv1.VirtualMachine) bool {
		return v.Status.Phase == novacronv1.VMFailed && v.Status.LauncherPod != ""
	})
	err := mallory.Patch(ctx, failed, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"template":{"spec":{"resources":{"cpu":64,"memory":"250Gi"}}}}}`)))
	msg := refused(t, err, "spec.template.spec.resources")
	assert.Contains(t, msg, "holds the VM's place on node")

	// Stopped, it may: its next pod is placed, and counted, at the new size.
	require.NoError(t, mallory.Patch(ctx, failed, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"running":false}}`))))
	env.WaitVM(t, client.ObjectKeyFromObject(v), timeout, "Stopped without a pod", func(v *novacronv1.VirtualMachine) bool {
		return v.Status.Phase == novacronv1.VMStopped && v.Status.LauncherPod == ""
	})
	require.NoError(t, mallory.Patch(ctx, failed, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"template":{"spec":{"resources":{"cpu":2}}}}}`))))
}

// Finding 12: a VM's pod affinity stays in its namespace, so a tenant cannot
// place a VM beside another tenant's (nor learn where those run).
func TestATenantCannotPlaceAVMBesideAnotherTenantsVM(t *testing.T) {
	ctx := context.Background()
	mallory := tenant(t, "mallory-affinity", "mallory")
	victim := metav1.LabelSelector{MatchLabels: map[string]string{novacronv1.LabelVM: "payroll-db"}}

	v := newVM("mallory-affinity", "neighbour")
	v.Spec.Template.Spec.Affinity = &corev1.Affinity{PodAffinity: &corev1.PodAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{
		{LabelSelector: &victim, TopologyKey: corev1.LabelHostname, NamespaceSelector: &metav1.LabelSelector{}}}}}
	refused(t, mallory.Create(ctx, v), "spec.template.spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].namespaceSelector")

	v = newVM("mallory-affinity", "neighbour")
	v.Spec.Template.Spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{
		{Weight: 100, PodAffinityTerm: corev1.PodAffinityTerm{LabelSelector: &victim, TopologyKey: corev1.LabelHostname, Namespaces: []string{"mallory-affinity", "finance"}}}}}}
	msg := refused(t, mallory.Create(ctx, v), "spec.template.spec.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm.namespaces[1]")
	assert.Contains(t, msg, "within its own namespace only")

	// Within its own namespace it is the tenant's to use.
	v.Spec.Template.Spec.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm.Namespaces = nil
	v.Spec.Running = ptr.To(false)
	require.NoError(t, mallory.Create(ctx, v))
}
