package testenv

import (
	"context"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/novacron/operator/devenv"
	"github.com/novacron/operator/operator/domain"
)

// Image is the catalog image the tests' VMs boot (marketplace://ubuntu-22.04-lts);
// Volume is the volume it names, staged on every simulated node.
const (
	Image  = "ubuntu-22.04-lts"
	Volume = "ubuntu-22.04.qcow2"
)

// AddSimulatedNodes gives the environment what `novacron dev` gives a cluster:
// the operator's namespace with an image catalog holding Image, and one
// simulated hypervisor (libvirt's test driver, under dir) per node, registered
// as a Ready Node and its Hypervisor. It returns each node's libvirt URI.
func (e *Env) AddSimulatedNodes(ctx context.Context, dir string, nodes []devenv.SimNode) (map[string]string, error) {
	if err := e.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "novacron-system"}}); err != nil {
		return nil, err
	}
	if err := e.Client.Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: domain.CatalogConfigMap, Namespace: "novacron-system"},
		Data:       map[string]string{Image: "volume: " + Volume + "\n"},
	}); err != nil {
		return nil, err
	}
	uris, err := devenv.SimulatedNodes(filepath.Join(dir, "nodes"), nodes, domain.NewCatalog(map[string]domain.Image{Image: {Volume: Volume}}))
	if err != nil {
		return nil, err
	}
	return uris, devenv.Register(ctx, e.Client, nodes, uris, false)
}
