package domain

// The image catalog resolves a VM's image.source into the image volume staged
// in each hypervisor's storage pool. It is a ConfigMap that platform teams
// edit; the operator reads it on every use, so edits apply without a restart.

import (
	"errors"
	"fmt"
	"maps"
	"slices"
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

// Catalog maps image names (marketplace://NAME) to images. An entry that
// does not parse fails only the VMs that name it: one platform team's typo
// must not stop every VM from starting.
type Catalog struct {
	images map[string]Image
	broken map[string]error
}

// ErrBrokenEntry is a catalog entry that does not parse.
var ErrBrokenEntry = errors.New("broken image catalog entry")

// ParseCatalog reads a catalog from ConfigMap data: each key is an image
// name, each value the YAML of an Image. The error names every entry that
// does not parse; the catalog holds the others (and Resolve says what is
// wrong with a broken one).
func ParseCatalog(data map[string]string) (Catalog, error) {
	c := Catalog{images: map[string]Image{}, broken: map[string]error{}}
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(data)) {
		img, err := parseImage(data[name])
		if err != nil {
			err = fmt.Errorf("image catalog entry %q: %w", name, err)
			c.broken[name] = err
			errs = append(errs, err)
			continue
		}
		c.images[name] = img
	}
	return c, errors.Join(errs...)
}

func parseImage(doc string) (Image, error) {
	var img Image
	if err := yaml.UnmarshalStrict([]byte(doc), &img); err != nil {
		return img, err
	}
	if img.Volume == "" {
		return img, errors.New("volume is required")
	}
	switch img.Format {
	case "":
		img.Format = "qcow2"
	case "qcow2", "raw":
	default:
		return img, fmt.Errorf("format %q is not qcow2 or raw", img.Format)
	}
	if img.Initrd != "" && img.Kernel == "" {
		return img, errors.New("initrd needs a kernel")
	}
	return img, nil
}

// NewCatalog is a catalog of well-formed images.
func NewCatalog(images map[string]Image) Catalog { return Catalog{images: images} }

// Volumes are the volumes the catalog's images need in a storage pool,
// sorted: what a node must have staged.
func (c Catalog) Volumes() []string {
	var vols []string
	for _, img := range c.images {
		for _, v := range []string{img.Volume, img.Kernel, img.Initrd} {
			if v != "" {
				vols = append(vols, v)
			}
		}
	}
	slices.Sort(vols)
	return vols
}

// Resolve finds the image a VM's spec.template.spec.image.source names.
func (c Catalog) Resolve(source string) (Image, error) {
	name, ok := strings.CutPrefix(source, "marketplace://")
	if !ok {
		return Image{}, fmt.Errorf("image source %q: only marketplace:// images are supported so far; add the image to the catalog (ConfigMap %s) and use marketplace://NAME", source, CatalogConfigMap)
	}
	if err, ok := c.broken[name]; ok {
		return Image{}, fmt.Errorf("%w: %w; the platform team must fix ConfigMap %s", ErrBrokenEntry, err, CatalogConfigMap)
	}
	img, ok := c.images[name]
	if !ok {
		names := slices.Sorted(maps.Keys(c.images))
		return Image{}, fmt.Errorf("image %q is not in the image catalog (ConfigMap %s); known images: %s", name, CatalogConfigMap, strings.Join(names, ", "))
	}
	return img, nil
}
