package libvirt

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	golibvirt "libvirt.org/go/libvirt"

	"github.com/novacron/operator/operator/provider"
)

func TestURIRules(t *testing.T) {
	strict := URIRules{}
	lab := URIRules{TCP: true, Local: true, Test: true}
	for _, tc := range []struct {
		uri   string
		rules URIRules
		why   string // empty: allowed
	}{
		{"qemu+tls://node-1/system", strict, ""},
		{"qemu+tls://node-1:16514/system?pkipath=/etc/pki/novacron", strict, ""},
		{"qemu+tls://node-1/system?no_verify=1", lab, `parameter "no_verify"`},
		{"qemu+tls://node-1/system?command=/bin/sh", lab, `parameter "command"`},
		{"qemu+tls://node-1/session", lab, "path must be /system"},
		{"qemu+tls:///system", lab, "a host is needed"},
		{"qemu+tls://root@node-1/system", lab, "no user name"},
		{"qemu+ssh://node-1/system", lab, `scheme "qemu+ssh"`},
		{"qemu+ext:///system?command=/bin/sh", lab, `scheme "qemu+ext"`},
		{"lxc:///", lab, `scheme "lxc"`},
		{"qemu+tcp://10.0.0.1/system", strict, "--hypervisor-uris=tcp"},
		{"qemu+tcp://10.0.0.1/system", lab, ""},
		{"qemu+tcp://10.0.0.1/system?socket=/x", lab, `parameter "socket"`},
		{"qemu:///system?socket=/run/libvirt/libvirt-sock", strict, "--hypervisor-uris=local"},
		{"qemu:///system?socket=/run/libvirt/libvirt-sock", lab, ""},
		{"qemu:///system?command=x", lab, `parameter "command"`},
		{"qemu:///session", lab, "qemu:///system"},
		{"qemu+tls://node-1/system?no_verify=1;x", lab, "no ';'"},
		{"qemu+tls://node-1/system?pkipath=/x&no_verify=1;y", lab, "no ';'"},
		{"qemu+tls://node-1/system?pkipath=%zz", lab, "parameters"},
		{"qemu+tls://node-1/system#x", lab, "no fragment"},
		{"test:///default", strict, "--hypervisor-uris=test"},
		{"test:///tmp/node.xml", lab, ""},
	} {
		err := tc.rules.Check(tc.uri)
		if tc.why == "" {
			assert.NoError(t, err, tc.uri)
			continue
		}
		if assert.ErrorIs(t, err, provider.ErrRefused, tc.uri) {
			assert.Contains(t, err.Error(), tc.why, tc.uri)
			assert.Contains(t, err.Error(), "spec.uri", tc.uri)
		}
	}
}

func TestParseURIRules(t *testing.T) {
	r, err := ParseURIRules("tls,tcp,test")
	require.NoError(t, err)
	assert.Equal(t, URIRules{TCP: true, Test: true}, r)
	_, err = ParseURIRules("tls,ssh")
	assert.ErrorContains(t, err, `"ssh"`)
}

// A refused URI is never dialed, and says why.
func TestRefusedURIIsNotDialed(t *testing.T) {
	c := NewConnector(URIRules{})
	t.Cleanup(c.Close)
	c.Dial = func(string) (*golibvirt.Connect, error) { t.Fatal("dialed a refused URI"); return nil, nil }
	_, err := c.Hypervisor(t.Context(), "qemu+ext:///system?command=/bin/sh")
	assert.ErrorIs(t, err, provider.ErrRefused)
	assert.ErrorIs(t, err, provider.ErrUnreachable, "callers treat it as a host they cannot reach")
}
