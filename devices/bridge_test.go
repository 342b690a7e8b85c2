package devices

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

// A bridge network other than "default" is the hypervisor network its
// namespace's NetworkAttachmentDefinition names; a name alone joins nothing.
func TestABridgeNetworkIsWhatItsNamespacesDefinitionNames(t *testing.T) {
	ctx := context.Background()
	read := networks(map[string]map[string]string{
		"team/apps":  {novacronv1.AnnotationHypervisorNetwork: "vlan-42"},
		"team/plain": {},
		"ops/mgmt":   {novacronv1.AnnotationHypervisorNetwork: "mgmt"},
	})
	hv, err := BridgeNetwork(ctx, read, "team", "default")
	require.NoError(t, err)
	assert.Equal(t, "default", hv, "default needs no definition")
	hv, err = BridgeNetwork(ctx, read, "team", "apps")
	require.NoError(t, err)
	assert.Equal(t, "vlan-42", hv)

	_, err = BridgeNetwork(ctx, read, "team", "mgmt")
	assert.ErrorIs(t, err, ErrNoNetwork, "another namespace's definition is not this one's")
	assert.True(t, IsVMError(err))
	assert.Contains(t, err.Error(), `bridge network "mgmt" needs a NetworkAttachmentDefinition named mgmt in namespace team`)
	_, err = BridgeNetwork(ctx, read, "team", "plain")
	assert.ErrorIs(t, err, ErrNoHypervisorNetwork)
	assert.True(t, IsVMError(err))

	vm := &novacronv1.VirtualMachine{}
	vm.Namespace = "team"
	vm.Spec.Template.Spec.Networks = []novacronv1.Network{{Name: "default"}, {Name: "apps", Type: novacronv1.NetworkTypeBridge}, {Name: "data", Type: novacronv1.NetworkTypeSRIOV}}
	nets, err := BridgeNetworks(ctx, read, vm)
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"default": "default", "apps": "vlan-42"}, nets)
	vm.Spec.Template.Spec.Networks[1].Name = "plain"
	_, err = BridgeNetworks(ctx, read, vm)
	assert.ErrorContains(t, err, "spec.template.spec.networks[1]: ")
}
