// Package hypervisors finds a node's hypervisor: its Hypervisor object and a
// connection to it. Every controller that acts on a node goes through here.
package hypervisors

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/provider"
)

// ForNode finds the node's Hypervisor object and connects to it. A node with no
// Hypervisor object counts as unreachable (provider.ErrUnreachable, wrapping
// the NotFound), so callers wait instead of assuming its domains are gone.
func ForNode(ctx context.Context, c client.Reader, connector provider.Connector, node string) (*novacronv1.Hypervisor, provider.Hypervisor, error) {
	hvObj := &novacronv1.Hypervisor{}
	if err := c.Get(ctx, client.ObjectKey{Name: node}, hvObj); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil, fmt.Errorf("%w: node %s has no Hypervisor object: %w", provider.ErrUnreachable, node, err)
		}
		return nil, nil, err
	}
	hv, err := connector.Hypervisor(ctx, hvObj.Spec.URI)
	if err != nil {
		return nil, nil, fmt.Errorf("node %s: %w", node, err)
	}
	return hvObj, hv, nil
}

// Pool is the storage pool the node's VM disks live in.
func Pool(hv *novacronv1.Hypervisor) string {
	if hv.Spec.StoragePool == "" {
		return "default"
	}
	return hv.Spec.StoragePool
}
