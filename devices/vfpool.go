package devices

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

// ErrNoNetwork means an sr-iov network has no NetworkAttachmentDefinition (or
// Multus is not installed); ErrNoVFPool that the definition names no VF pool.
// Both are the VM's to fix; any other error from VFPool may pass.
var (
	ErrNoNetwork = errors.New("no NetworkAttachmentDefinition")
	ErrNoVFPool  = errors.New("no VF pool")
)

// NetworkAnnotations reads the annotations of the NetworkAttachmentDefinition
// namespace/name, with the API's NotFound (or NoMatch, when its CRD is not
// installed) for a missing one. Each caller reads in its own way: admission
// and the operator live, the scheduler through a short-lived cache.
type NetworkAnnotations func(ctx context.Context, namespace, name string) (map[string]string, error)

// VFPool is the one rule for an sr-iov network: it is the
// NetworkAttachmentDefinition of the same name in the VM's namespace, whose
// annotation k8s.v1.cni.cncf.io/resourceName names the VF pool (a device
// plugin resource) its VFs come from.
func VFPool(ctx context.Context, read NetworkAnnotations, namespace, network string) (string, error) {
	ann, err := read(ctx, namespace, network)
	switch {
	case apierrors.IsNotFound(err) || meta.IsNoMatchError(err):
		return "", &networkError{ErrNoNetwork, fmt.Sprintf("sr-iov network %q needs a NetworkAttachmentDefinition named %s in namespace %s (and Multus installed)", network, network, namespace)}
	case err != nil:
		return "", fmt.Errorf("reading NetworkAttachmentDefinition %s/%s: %w", namespace, network, err)
	}
	pool := ann[novacronv1.AnnotationResourceName]
	if pool == "" {
		return "", &networkError{ErrNoVFPool, fmt.Sprintf("NetworkAttachmentDefinition %s/%s has no %s annotation naming its VF pool", namespace, network, novacronv1.AnnotationResourceName)}
	}
	return pool, nil
}

// networkError is ErrNoNetwork or ErrNoVFPool with the sentence a user reads.
type networkError struct {
	kind error
	msg  string
}

func (e *networkError) Error() string { return e.msg }
func (e *networkError) Unwrap() error { return e.kind }

// IsVMError says whether a VFPool or BridgeNetwork error is the VM's to fix
// (retrying cannot).
func IsVMError(err error) bool {
	return errors.Is(err, ErrNoNetwork) || errors.Is(err, ErrNoVFPool) || errors.Is(err, ErrNoHypervisorNetwork)
}

// VFPools maps each of the VM's sr-iov networks to its VF pool; an error
// names the network's field (spec.template.spec.networks[i]).
func VFPools(ctx context.Context, read NetworkAnnotations, vm *novacronv1.VirtualMachine) (map[string]string, error) {
	pools := map[string]string{}
	for i, n := range vm.Spec.Template.Spec.Networks {
		if n.Type != novacronv1.NetworkTypeSRIOV {
			continue
		}
		pool, err := VFPool(ctx, read, vm.Namespace, n.Name)
		if err != nil {
			return nil, fmt.Errorf("spec.template.spec.networks[%d]: %w", i, err)
		}
		pools[n.Name] = pool
	}
	return pools, nil
}

// ReadNetworks reads NetworkAttachmentDefinitions with a controller-runtime
// reader (as unstructured objects: NovaCron does not link Multus' types).
func ReadNetworks(c client.Reader) NetworkAnnotations {
	return func(ctx context.Context, namespace, name string) (map[string]string, error) {
		nad := &unstructured.Unstructured{}
		nad.SetGroupVersionKind(novacronv1.NetworkAttachmentDefinition)
		if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, nad); err != nil {
			return nil, err
		}
		return nad.GetAnnotations(), nil
	}
}
