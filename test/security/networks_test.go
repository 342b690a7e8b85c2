package security

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

// Finding 6: a bridge NIC's name is not the hypervisor's network. A tenant
// naming "mgmt" joins nothing; a network the platform team gave the
// namespace (a NetworkAttachmentDefinition) joins the hypervisor network it
// names, and that is what reaches the node.
func TestATenantJoinsOnlyTheBridgeNetworksItsNamespaceWasGiven(t *testing.T) {
	ctx := context.Background()
	mallory := tenant(t, "mallory-bridge", "mallory")
	v := newVM("mallory-bridge", "web")
	v.Spec.Template.Spec.Networks = []novacronv1.Network{{Name: "default"}, {Name: "mgmt", Type: novacronv1.NetworkTypeBridge}}
	msg := refused(t, mallory.Create(ctx, v), "spec.template.spec.networks[1].name")
	assert.Contains(t, msg, `bridge network "mgmt" needs a NetworkAttachmentDefinition named mgmt in namespace mallory-bridge`)

	nad := &unstructured.Unstructured{}
	nad.SetGroupVersionKind(novacronv1.NetworkAttachmentDefinition)
	nad.SetNamespace("mallory-bridge")
	nad.SetName("apps")
	nad.SetAnnotations(map[string]string{novacronv1.AnnotationHypervisorNetwork: "vlan-42"})
	require.NoError(t, env.Client.Create(ctx, nad), "the platform team's")
	v.Spec.Template.Spec.Networks[1].Name = "apps"
	require.NoError(t, mallory.Create(ctx, v))
	running(t, v)
	d, ok := defined.domain("mallory-bridge_web")
	require.True(t, ok)
	require.Len(t, d.NICs, 2)
	assert.Equal(t, "default", d.NICs[0].Network)
	assert.Equal(t, "vlan-42", d.NICs[1].Network, "the definition's hypervisor network, not the NIC's name")
}
