package domain

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

func TestParseAndResolve(t *testing.T) {
	c, err := ParseCatalog(map[string]string{
		"ubuntu-22.04-lts": "volume: ubuntu-22.04.qcow2\nosFamily: linux\n",
		"cirros":           "volume: cirros.raw\nformat: raw\n",
	})
	require.NoError(t, err)
	img, err := c.Resolve("marketplace://ubuntu-22.04-lts")
	require.NoError(t, err)
	assert.Equal(t, Image{Volume: "ubuntu-22.04.qcow2", Format: "qcow2", OSFamily: "linux"}, img)

	_, err = c.Resolve("marketplace://windows-11")
	assert.EqualError(t, err, `image "windows-11" is not in the image catalog (ConfigMap novacron-image-catalog); known images: cirros, ubuntu-22.04-lts`)
	_, err = c.Resolve("https://example.com/x.qcow2")
	assert.ErrorContains(t, err, "only marketplace:// images are supported so far")
}

func TestParseRejectsBadEntries(t *testing.T) {
	for doc, want := range map[string]string{
		"format: qcow2\n":           `entry "x": volume is required`,
		"volume: a\nformat: vmdk\n": `format "vmdk" is not qcow2 or raw`,
		"volume: a\nsize: 10Gi\n":   `unknown field "size"`,
	} {
		_, err := ParseCatalog(map[string]string{"x": doc})
		assert.ErrorContains(t, err, want)
	}
}

// One broken entry fails only the VMs that name it.
func TestABrokenEntryBreaksOnlyItself(t *testing.T) {
	c, err := ParseCatalog(map[string]string{"ubuntu": "volume: ubuntu.qcow2\n", "typo": "volume: a\nformat: vmdk\n"})
	assert.ErrorContains(t, err, `image catalog entry "typo": format "vmdk" is not qcow2 or raw`)
	img, err := c.Resolve("marketplace://ubuntu")
	require.NoError(t, err)
	assert.Equal(t, "ubuntu.qcow2", img.Volume)
	_, err = c.Resolve("marketplace://typo")
	assert.ErrorIs(t, err, ErrBrokenEntry)
	assert.ErrorContains(t, err, `format "vmdk" is not qcow2 or raw; the platform team must fix ConfigMap novacron-image-catalog`)
	_, err = c.Resolve("marketplace://debian")
	assert.ErrorContains(t, err, "known images: ubuntu")
	assert.Equal(t, []string{"ubuntu.qcow2"}, c.Volumes())
}

// The shipped catalog parses and knows the image the seed README's VM uses.
func TestShippedCatalog(t *testing.T) {
	raw, err := os.ReadFile("../../manifests/images/catalog.yaml")
	require.NoError(t, err)
	var cm corev1.ConfigMap
	require.NoError(t, yaml.UnmarshalStrict(raw, &cm))
	assert.Equal(t, CatalogConfigMap, cm.Name)
	c, err := ParseCatalog(cm.Data)
	require.NoError(t, err)
	_, err = c.Resolve("marketplace://ubuntu-22.04-lts")
	assert.NoError(t, err)
}
