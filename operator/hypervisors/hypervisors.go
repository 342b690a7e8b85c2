// Package hypervisors finds a node's hypervisor: its Hypervisor object, a
// connection to it, and the VMs recorded on it. Every controller that acts on
// a node goes through here.
package hypervisors

import (
	"context"
	"fmt"
	resourceapi "k8s.io/api/resource/v1"

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

// NodeNameIndex indexes VirtualMachines by status.nodeName in the manager's
// cache (IndexVMs), to find the VMs on a node.
const NodeNameIndex = "status.nodeName"

// VMNodeName is NodeNameIndex's index function.
func VMNodeName(o client.Object) []string {
	if n := o.(*novacronv1.VirtualMachine).Status.NodeName; n != "" {
		return []string{n}
	}
	return nil
}

// IndexVMs adds NodeNameIndex to a cache; the manager does it once for every
// controller that looks VMs up by node.
func IndexVMs(ctx context.Context, indexer client.FieldIndexer) error {
	return indexer.IndexField(ctx, &novacronv1.VirtualMachine{}, NodeNameIndex, VMNodeName)
}

// SliceNodeIndex indexes ResourceSlices by spec.nodeName (IndexSlices), to
// find the devices on a node.
const SliceNodeIndex = "spec.nodeName"

// SliceNodeName is SliceNodeIndex's index function.
func SliceNodeName(o client.Object) []string {
	if s, ok := o.(*resourceapi.ResourceSlice); ok && s.Spec.NodeName != nil {
		return []string{*s.Spec.NodeName}
	}
	return nil
}

// IndexSlices adds SliceNodeIndex to a cache.
func IndexSlices(ctx context.Context, indexer client.FieldIndexer) error {
	return indexer.IndexField(ctx, &resourceapi.ResourceSlice{}, SliceNodeIndex, SliceNodeName)
}

// SlicesOn lists the ResourceSlices on node, of every driver.
func SlicesOn(ctx context.Context, c client.Reader, node string) ([]resourceapi.ResourceSlice, error) {
	var list resourceapi.ResourceSliceList
	if err := c.List(ctx, &list, client.MatchingFields{SliceNodeIndex: node}); err != nil {
		return nil, fmt.Errorf("listing the ResourceSlices of node %s: %w", node, err)
	}
	return list.Items, nil
}

// VMsOn lists the VMs whose status.nodeName is node.
func VMsOn(ctx context.Context, c client.Reader, node string) ([]novacronv1.VirtualMachine, error) {
	var vms novacronv1.VirtualMachineList
	if err := c.List(ctx, &vms, client.MatchingFields{NodeNameIndex: node}); err != nil {
		return nil, err
	}
	return vms.Items, nil
}
