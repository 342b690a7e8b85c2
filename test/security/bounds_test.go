package security

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

// Finding 13: a VM counts against its namespace's ResourceQuota through its
// launcher pod, and a refusal reaches the VM naming the quota; sizes and
// names a tenant gives are bounded.
func TestAVMCountsAgainstItsNamespacesQuota(t *testing.T) {
	ctx := context.Background()
	mallory := tenant(t, "mallory-quota", "mallory")
	quota := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Name: "team-compute", Namespace: "mallory-quota"},
		Spec: corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{corev1.ResourceRequestsCPU: resource.MustParse("1")}}}
	require.NoError(t, env.Client.Create(ctx, quota))
	// The quota controller's part (envtest runs none): what is used so far.
	quota.Status = corev1.ResourceQuotaStatus{Hard: quota.Spec.Hard, Used: corev1.ResourceList{corev1.ResourceRequestsCPU: resource.MustParse("0")}}
	require.NoError(t, env.Client.Status().Update(ctx, quota))

	v := newVM("mallory-quota", "big")
	v.Spec.Template.Spec.Resources.CPU = 4
	require.NoError(t, mallory.Create(ctx, v))
	got := env.WaitVM(t, client.ObjectKeyFromObject(v), timeout, "refused by the quota", func(v *novacronv1.VirtualMachine) bool {
		c := meta.FindStatusCondition(v.Status.Conditions, novacronv1.VMConditionScheduled)
		return c != nil && c.Reason == novacronv1.ReasonQuotaExceeded
	})
	c := meta.FindStatusCondition(got.Status.Conditions, novacronv1.VMConditionScheduled)
	assert.Contains(t, c.Message, "exceeded quota: team-compute")
	assert.Empty(t, got.Status.NodeName, "never placed")

	long := newVM("mallory-quota", strings.Repeat("x", 64))
	msg := refused(t, mallory.Create(ctx, long), "metadata.name")
	assert.Contains(t, msg, "must be no more than 63 characters")
	neg := newVM("mallory-quota", "negative")
	neg.Spec.Template.Spec.Resources.Memory = resource.MustParse("-4Gi")
	refused(t, mallory.Create(ctx, neg), "spec.template.spec.resources.memory")
}

// Finding 13: a disk within the bounds but larger than the node's storage
// pool has free (thin disks that outgrow it would stop every guest there) is
// not made: the VM fails naming the field, and no domain is defined.
func TestADiskLargerThanItsNodesPoolIsNotMade(t *testing.T) {
	ctx := context.Background()
	mallory := tenant(t, "mallory-disk", "mallory")
	v := newVM("mallory-disk", "hoard")
	v.Spec.Template.Spec.Resources.Disk = ptr.To(resource.MustParse("500Gi"))
	require.NoError(t, mallory.Create(ctx, v))
	got := env.WaitVM(t, client.ObjectKeyFromObject(v), timeout, "refused by the pool", func(v *novacronv1.VirtualMachine) bool {
		c := meta.FindStatusCondition(v.Status.Conditions, novacronv1.ConditionReady)
		return c != nil && c.Reason == novacronv1.ReasonPoolFull
	})
	c := meta.FindStatusCondition(got.Status.Conditions, novacronv1.ConditionReady)
	assert.Contains(t, c.Message, "spec.template.spec.resources.disk: 500Gi")
	_, ok := defined.domain("mallory-disk_hoard")
	assert.False(t, ok, "no domain defined")
}
