package devices

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

// ErrNoHypervisorNetwork means a bridge network's NetworkAttachmentDefinition
// names no hypervisor network; the VM's to fix.
var ErrNoHypervisorNetwork = errors.New("no hypervisor network")

// DefaultBridge is the bridge network every VM may join: the hypervisor's
// libvirt network "default" (NAT, no route to the hosts' own networks).
const DefaultBridge = "default"

// BridgeNetwork is the one rule for a bridge network: "default" is the
// hypervisor's network of that name; any other is the
// NetworkAttachmentDefinition of that name in the VM's namespace, whose
// annotation novacron.io/hypervisor-network names the hypervisor network.
// Platform teams make those definitions (tenants usually may not, as with
// Multus), so a tenant's VM joins only networks its namespace was given,
// never "mgmt" or "storage" by naming them.
func BridgeNetwork(ctx context.Context, read NetworkAnnotations, namespace, network string) (string, error) {
	if network == DefaultBridge {
		return DefaultBridge, nil
	}
	ann, err := read(ctx, namespace, network)
	switch {
	case apierrors.IsNotFound(err) || meta.IsNoMatchError(err):
		return "", &networkError{ErrNoNetwork, fmt.Sprintf("bridge network %q needs a NetworkAttachmentDefinition named %s in namespace %s whose %s annotation names the hypervisor network (only %q needs none)",
			network, network, namespace, novacronv1.AnnotationHypervisorNetwork, DefaultBridge)}
	case err != nil:
		return "", fmt.Errorf("reading NetworkAttachmentDefinition %s/%s: %w", namespace, network, err)
	}
	hvNet := ann[novacronv1.AnnotationHypervisorNetwork]
	if hvNet == "" {
		return "", &networkError{ErrNoHypervisorNetwork, fmt.Sprintf("NetworkAttachmentDefinition %s/%s has no %s annotation naming its hypervisor network", namespace, network, novacronv1.AnnotationHypervisorNetwork)}
	}
	return hvNet, nil
}

// BridgeNetworks maps each of the VM's bridge networks to its hypervisor
// network; an error names the network's field (spec.template.spec.networks[i]).
func BridgeNetworks(ctx context.Context, read NetworkAnnotations, vm *novacronv1.VirtualMachine) (map[string]string, error) {
	out := map[string]string{}
	for i, n := range vm.Spec.Template.Spec.Networks {
		if n.Type == novacronv1.NetworkTypeSRIOV {
			continue
		}
		hvNet, err := BridgeNetwork(ctx, read, vm.Namespace, n.Name)
		if err != nil {
			return nil, fmt.Errorf("spec.template.spec.networks[%d]: %w", i, err)
		}
		out[n.Name] = hvNet
	}
	return out, nil
}
