package domain

import (
	"bytes"
	"io"
	"testing"

	"github.com/kdomanski/iso9660"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

func TestNetworkConfigFromSpec(t *testing.T) {
	d, err := NewCloudInit("uid-1", "web-1", "#cloud-config\npackages: [nginx]\n", []CloudInitNIC{
		{MAC: "52:54:00:aa:bb:01", Network: novacronv1.Network{Name: "management", IPv4: &novacronv1.IPv4Config{Method: novacronv1.IPv4Static, Address: "10.0.1.10/24", Gateway: "10.0.1.1"}}},
		{MAC: "52:54:00:aa:bb:02", Network: novacronv1.Network{Name: "data", IPv4: &novacronv1.IPv4Config{Method: novacronv1.IPv4DHCP}}},
	})
	require.NoError(t, err)
	var got map[string]any
	require.NoError(t, yaml.Unmarshal([]byte(d.NetworkConfig), &got))
	assert.Equal(t, map[string]any{
		"version": float64(2),
		"ethernets": map[string]any{
			"management": map[string]any{"match": map[string]any{"macaddress": "52:54:00:aa:bb:01"}, "dhcp4": false,
				"addresses": []any{"10.0.1.10/24"}, "routes": []any{map[string]any{"to": "default", "via": "10.0.1.1"}}},
			"data": map[string]any{"match": map[string]any{"macaddress": "52:54:00:aa:bb:02"}, "dhcp4": true},
		},
	}, got)
	assert.Equal(t, "instance-id: uid-1\nlocal-hostname: web-1\n", d.MetaData)
	assert.Equal(t, "#cloud-config\npackages: [nginx]\n", d.UserData)

	_, err = NewCloudInit("u", "h", "", []CloudInitNIC{{Network: novacronv1.Network{Name: "x", IPv4: &novacronv1.IPv4Config{Method: novacronv1.IPv4Static}}}})
	assert.EqualError(t, err, `network "x": static IPv4 needs an address`)
}

// The ISO has the label and file names cloud-init's NoCloud source looks for.
func TestISOIsANoCloudDataSource(t *testing.T) {
	d, err := NewCloudInit("uid-1", "web-1", "#cloud-config\nusers: [admin]\n", nil)
	require.NoError(t, err)
	raw, err := d.ISO()
	require.NoError(t, err)

	img, err := iso9660.OpenImage(bytes.NewReader(raw))
	require.NoError(t, err)
	label, err := img.Label()
	require.NoError(t, err)
	assert.Equal(t, "cidata", label)
	root, err := img.RootDir()
	require.NoError(t, err)
	children, err := root.GetChildren()
	require.NoError(t, err)
	files := map[string]string{}
	for _, c := range children {
		b, err := io.ReadAll(c.Reader())
		require.NoError(t, err)
		files[c.Name()] = string(b)
	}
	// Readers (Linux's isofs too) show the names without the ";1" version.
	assert.Equal(t, map[string]string{
		"user-data":      "#cloud-config\nusers: [admin]\n",
		"meta-data":      "instance-id: uid-1\nlocal-hostname: web-1\n",
		"network-config": "ethernets: {}\nversion: 2\n",
	}, files)
}
