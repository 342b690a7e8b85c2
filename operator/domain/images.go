package domain

// The image catalog resolves a VM's image.source into the image volume staged
// in each hypervisor's storage pool. It is a ConfigMap that platform teams
// edit; the operator reads it on every use, so edits apply without a restart.

import (
	"fmt"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// CatalogConfigMap is the catalog's ConfigMap, in the operator's namespace.
const CatalogConfigMap = "novacron-image-catalog"

// Image is one catalog entry. Its volume must be present in the storage pool of
// every hypervisor that may run it (staged by the node's image puller or by
// hand); each VM's root disk is a copy-on-write overlay of it.
type Image struct {
	// Volume is the image's volume name in the storage pool.
	Volume string `json:"volume"`
	// Format of the volume: qcow2 (default) or raw.
	Format string `json:"format,omitempty"`
	// OSFamily is informational (linux, windows).
	OSFamily string `json:"osFamily,omitempty"`

	// Kernel, Initrd and Cmdline boot the VM directly from a kernel (volumes in
	// the same storage pool) instead of the disk's boot loader. For minimal
	// appliance images and the hypervisor test lab.
	Kernel  string `json:"kernel,omitempty"`
	Initrd  string `json:"initrd,omitempty"`
	Cmdline string `json:"cmdline,omitempty"`
}

// Catalog maps image names (marketplace://NAME) to images.
type Catalog map[string]Image

// ParseCatalog reads a catalog from ConfigMap data: each key is an image name, each
// value the YAML of an Image.
func ParseCatalog(data map[string]string) (Catalog, error) {
	c := Catalog{}
	for name, doc := range data {
		var img Image
		if err := yaml.UnmarshalStrict([]byte(doc), &img); err != nil {
			return nil, fmt.Errorf("image catalog entry %q: %w", name, err)
		}
		if img.Volume == "" {
			return nil, fmt.Errorf("image catalog entry %q: volume is required", name)
		}
		switch img.Format {
		case "":
			img.Format = "qcow2"
		case "qcow2", "raw":
		default:
			return nil, fmt.Errorf("image catalog entry %q: format %q is not qcow2 or raw", name, img.Format)
		}
		if img.Initrd != "" && img.Kernel == "" {
			return nil, fmt.Errorf("image catalog entry %q: initrd needs a kernel", name)
		}
		c[name] = img
	}
	return c, nil
}

// Resolve finds the image a VM's spec.template.spec.image.source names.
func (c Catalog) Resolve(source string) (Image, error) {
	name, ok := strings.CutPrefix(source, "marketplace://")
	if !ok {
		return Image{}, fmt.Errorf("image source %q: only marketplace:// images are supported so far; add the image to the catalog (ConfigMap %s) and use marketplace://NAME", source, CatalogConfigMap)
	}
	img, ok := c[name]
	if !ok {
		names := make([]string, 0, len(c))
		for n := range c {
			names = append(names, n)
		}
		sort.Strings(names)
		return Image{}, fmt.Errorf("image %q is not in the image catalog (ConfigMap %s); known images: %s", name, CatalogConfigMap, strings.Join(names, ", "))
	}
	return img, nil
}
