package security

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

// Finding 11: a platform team's size limit holds however a tenant writes the
// quantity (policies compare bytes, as numbers), and the tenant can neither
// write a policy nor step around one by asking for another kind of object.
func TestATenantCannotSlipPastAPlatformPolicy(t *testing.T) {
	ctx := context.Background()
	mallory := tenant(t, "mallory-policy", "mallory")
	p := &novacronv1.VirtualMachinePolicy{ObjectMeta: metav1.ObjectMeta{Name: "mallory-size"},
		Spec: novacronv1.VirtualMachinePolicySpec{DecisionPoints: []novacronv1.DecisionPoint{novacronv1.DecisionAdmission},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "mallory-policy"}},
			Rego: `package mallory.size
import data.novacron.lib
deny contains {"msg": "at most 8Gi of memory", "field": "spec.template.spec.resources.memory"} if lib.vm_spec.resources.memoryBytes > 8589934592
deny contains {"msg": "no snapshots here", "field": "spec.vmName"} if input.kind == "VirtualMachineSnapshot"
`}}
	require.NoError(t, env.Client.Create(ctx, p))
	t.Cleanup(func() { _ = env.Client.Delete(ctx, p) })
	require.Eventually(t, func() bool {
		got := &novacronv1.VirtualMachinePolicy{}
		return env.Client.Get(ctx, client.ObjectKeyFromObject(p), got) == nil && meta.IsStatusConditionTrue(got.Status.Conditions, novacronv1.PolicyConditionCompiled)
	}, timeout, 50*time.Millisecond)

	for _, mem := range []string{"9Gi", "8589934593", "8193Mi"} {
		v := newVM("mallory-policy", "big")
		v.Spec.Template.Spec.Resources.Memory = resource.MustParse(mem)
		require.Eventually(t, func() bool {
			err := mallory.Create(ctx, v.DeepCopy())
			return err != nil && apierrors.IsInvalid(err)
		}, timeout, 50*time.Millisecond, "memory %s", mem)
		msg := refused(t, mallory.Create(ctx, v.DeepCopy()), "spec.template.spec.resources.memory")
		assert.Contains(t, msg, "policy mallory-size: at most 8Gi of memory", mem)
	}
	small := newVM("mallory-policy", "small")
	require.NoError(t, mallory.Create(ctx, small))
	snap := &novacronv1.VirtualMachineSnapshot{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "mallory-policy"}, Spec: novacronv1.VirtualMachineSnapshotSpec{VMName: "small"}}
	refused(t, mallory.Create(ctx, snap), "spec.vmName")

	own := &novacronv1.VirtualMachinePolicy{ObjectMeta: metav1.ObjectMeta{Name: "mallory-allows-all"},
		Spec: novacronv1.VirtualMachinePolicySpec{DecisionPoints: []novacronv1.DecisionPoint{novacronv1.DecisionAdmission}, Rego: "package x\ndeny contains \"x\" if false\n"}}
	assert.True(t, apierrors.IsForbidden(mallory.Create(ctx, own)), "policies are the platform team's")
	assert.True(t, apierrors.IsForbidden(mallory.Delete(ctx, p)))
}
