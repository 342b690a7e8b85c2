package devices

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

// networks answers as an API server holding the given definitions would.
func networks(defs map[string]map[string]string) NetworkAnnotations {
	return func(_ context.Context, ns, name string) (map[string]string, error) {
		if ann, ok := defs[ns+"/"+name]; ok {
			return ann, nil
		}
		return nil, apierrors.NewNotFound(schema.GroupResource{Group: "k8s.cni.cncf.io", Resource: "network-attachment-definitions"}, name)
	}
}

func TestVFPoolIsTheDefinitionsResourceName(t *testing.T) {
	ctx := context.Background()
	read := networks(map[string]map[string]string{
		"team/data":  {novacronv1.AnnotationResourceName: "intel.com/sriov_data"},
		"team/plain": {},
	})
	pool, err := VFPool(ctx, read, "team", "data")
	require.NoError(t, err)
	assert.Equal(t, "intel.com/sriov_data", pool)

	_, err = VFPool(ctx, read, "team", "nope")
	assert.ErrorIs(t, err, ErrNoNetwork)
	assert.True(t, IsVMError(err))
	assert.Equal(t, `sr-iov network "nope" needs a NetworkAttachmentDefinition named nope in namespace team (and Multus installed)`, err.Error())

	_, err = VFPool(ctx, read, "team", "plain")
	assert.ErrorIs(t, err, ErrNoVFPool)
	assert.Equal(t, "NetworkAttachmentDefinition team/plain has no k8s.v1.cni.cncf.io/resourceName annotation naming its VF pool", err.Error())

	// The definition lives in the VM's namespace, not any other.
	_, err = VFPool(ctx, read, "other", "data")
	assert.ErrorIs(t, err, ErrNoNetwork)
}

func TestVFPoolErrorsThatMayPassAreNotTheVMs(t *testing.T) {
	ctx := context.Background()
	noCRD := func(context.Context, string, string) (map[string]string, error) {
		return nil, &meta.NoKindMatchError{GroupKind: novacronv1.NetworkAttachmentDefinition.GroupKind()}
	}
	_, err := VFPool(ctx, noCRD, "team", "data")
	assert.ErrorIs(t, err, ErrNoNetwork, "no Multus CRD: no such network")

	down := func(context.Context, string, string) (map[string]string, error) {
		return nil, errors.New("connection refused")
	}
	_, err = VFPool(ctx, down, "team", "data")
	require.Error(t, err)
	assert.False(t, IsVMError(err), "an API server that does not answer is not the VM's fault")
}

func TestVFPoolsNameTheField(t *testing.T) {
	ctx := context.Background()
	read := networks(map[string]map[string]string{"team/data": {novacronv1.AnnotationResourceName: "intel.com/sriov_data"}})
	vm := &novacronv1.VirtualMachine{}
	vm.Namespace = "team"
	vm.Spec.Template.Spec.Networks = []novacronv1.Network{
		{Name: "default", Type: novacronv1.NetworkTypeBridge},
		{Name: "data", Type: novacronv1.NetworkTypeSRIOV},
	}
	pools, err := VFPools(ctx, read, vm)
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"data": "intel.com/sriov_data"}, pools, "bridge networks need no pool")
	req := RequestFor(&vm.Spec.Template.Spec, pools)
	assert.Equal(t, []VFRequest{{Network: "data", ResourceName: "intel.com/sriov_data"}}, req.VFs)

	vm.Spec.Template.Spec.Networks = append(vm.Spec.Template.Spec.Networks, novacronv1.Network{Name: "gone", Type: novacronv1.NetworkTypeSRIOV})
	_, err = VFPools(ctx, read, vm)
	assert.ErrorIs(t, err, ErrNoNetwork)
	assert.Contains(t, err.Error(), "spec.template.spec.networks[2]: ")
}
