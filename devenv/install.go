package devenv

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/novacron/operator/manifests"
	"github.com/novacron/operator/operator/domain"
)

func fsGlobRaw(pattern string) ([]string, error) { return fs.Glob(manifests.FS, pattern) }

// decodeYAML splits a multi-document YAML file into objects.
func decodeYAML(s *runtime.Scheme, raw []byte) ([]client.Object, error) {
	codecs := serializer.NewCodecFactory(s)
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	var out []client.Object
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, _, err := codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if runtime.IsNotRegisteredError(err) {
			u := &unstructured.Unstructured{}
			if err := utilyaml.Unmarshal(doc, &u.Object); err != nil {
				return nil, err
			}
			out = append(out, u)
			continue
		}
		if err != nil {
			return nil, err
		}
		co, ok := obj.(client.Object)
		if !ok {
			return nil, fmt.Errorf("%T is not an API object", obj)
		}
		out = append(out, co)
	}
}

// LabGuestImage is the lab guest's catalog entry (test/lab/lab.sh stages its
// volumes on every lab node); in lab mode every catalog image boots it, so the
// samples run unchanged on real QEMU.
const LabGuestImage = "volume: lab-guest.qcow2\nkernel: vmlinuz\ninitrd: initrd.img\ncmdline: console=ttyS0 quiet\nosFamily: linux\n"

// install creates the operator's namespace, the image catalog, the built-in
// policies, the samples' network and the metrics reader role, as `kubectl
// apply -f manifests/...` would, and returns the catalog.
func install(ctx context.Context, c client.Client, lab bool) (domain.Catalog, error) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: OperatorNamespace}}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return domain.Catalog{}, err
	}
	objs, err := decodeAll(scheme(), "images/catalog.yaml", "policies/*.yaml", "samples/nad-data.yaml", "samples/nad-management.yaml", "rbac/metrics-reader.yaml")
	if err != nil {
		return domain.Catalog{}, err
	}
	var catalog domain.Catalog
	found := false
	for _, o := range objs {
		if cm, ok := o.(*corev1.ConfigMap); ok && cm.Name == domain.CatalogConfigMap {
			if lab {
				for k := range cm.Data {
					cm.Data[k] = LabGuestImage
				}
			}
			if catalog, err = domain.ParseCatalog(cm.Data); err != nil {
				return domain.Catalog{}, fmt.Errorf("manifests/images/catalog.yaml: %w", err)
			}
			found = true
		}
		if err := c.Create(ctx, o); err != nil {
			return domain.Catalog{}, fmt.Errorf("creating %s %s: %w", o.GetObjectKind().GroupVersionKind().Kind, o.GetName(), err)
		}
	}
	if !found {
		return domain.Catalog{}, fmt.Errorf("manifests/images/catalog.yaml: no ConfigMap %s", domain.CatalogConfigMap)
	}
	return catalog, nil
}
