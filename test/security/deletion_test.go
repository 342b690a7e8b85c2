package security

import (
	"context"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/vm"
	"github.com/novacron/operator/test/testenv"
)

// Finding 10: a delete never waits on the checks of a spec judged already.
// A namespace's deletion removes an sr-iov VM's NetworkAttachmentDefinition
// as soon as the VM; the operator then lets go of the VM without the webhook
// looking it up again. Meanwhile the VM's spec is nobody's to change: a
// preStop hook swapped in then would run unchecked.
func TestDeletingAVMNeverWaitsOnItsSpecsChecks(t *testing.T) {
	ctx := context.Background()
	mallory := tenant(t, "mallory-delete", "mallory")
	nad := &unstructured.Unstructured{}
	nad.SetGroupVersionKind(novacronv1.NetworkAttachmentDefinition)
	nad.SetNamespace("mallory-delete")
	nad.SetName("data")
	nad.SetAnnotations(map[string]string{novacronv1.AnnotationResourceName: "intel.com/sriov_data"})
	require.NoError(t, env.Client.Create(ctx, nad))

	v := newVM("mallory-delete", "web")
	v.Spec.Running = ptr.To(false)
	v.Spec.Template.Spec.Networks = []novacronv1.Network{{Name: "data", Type: novacronv1.NetworkTypeSRIOV}}
	// Another controller's finalizer keeps the VM visible once the
	// operator has let go.
	v.Finalizers = []string{"example.com/hold"}
	require.NoError(t, mallory.Create(ctx, v))
	env.WaitVM(t, client.ObjectKeyFromObject(v), timeout, "the operator's finalizer", func(v *novacronv1.VirtualMachine) bool {
		return slices.Contains(v.Finalizers, vm.Finalizer)
	})

	require.NoError(t, env.Client.Delete(ctx, nad))
	require.NoError(t, mallory.Delete(ctx, v))
	gone := env.WaitVM(t, client.ObjectKeyFromObject(v), timeout, "the operator let go", func(v *novacronv1.VirtualMachine) bool {
		return !slices.Contains(v.Finalizers, vm.Finalizer)
	})

	err := mallory.Patch(ctx, gone, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"template":{"spec":{"resources":{"cpu":8}}}}}`)))
	msg := refused(t, err, "spec")
	assert.Contains(t, msg, "being deleted")

	require.NoError(t, env.Client.Patch(ctx, gone, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`))))
	require.Eventually(t, func() bool {
		return apierrors.IsNotFound(env.Client.Get(ctx, client.ObjectKeyFromObject(v), &novacronv1.VirtualMachine{}))
	}, timeout, testenv.Poll)
}
