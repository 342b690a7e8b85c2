package hooks

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEgressRefusesWhatATenantMustNotReach(t *testing.T) {
	admin := Egress{Deny: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}}
	for _, addr := range []string{"127.0.0.1", "127.9.9.9", "::1", "169.254.169.254", "fd00:ec2::254", "fe80::1", "0.0.0.0", "::", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "10.96.0.1", "224.0.0.1"} {
		err := admin.Check(netip.MustParseAddr(addr))
		assert.ErrorIs(t, err, ErrRefused, addr)
	}
	for _, addr := range []string{"10.0.0.5", "192.0.2.10", "2001:db8::1"} {
		assert.NoError(t, admin.Check(netip.MustParseAddr(addr)), addr)
	}
	dev := Egress{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}}
	assert.NoError(t, dev.Check(netip.MustParseAddr("127.0.0.2")), "an admin's exception")
	assert.ErrorIs(t, dev.Check(netip.MustParseAddr("127.0.0.1")), ErrRefused, "only the exception")
}

// The check is made on the address dialled: after a name is resolved, and
// again on every redirect.
func TestTheClientChecksEveryAddressItDials(t *testing.T) {
	var internalHits int
	internal := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { internalHits++ }))
	t.Cleanup(internal.Close)
	// The "public" server is the exception the client may reach; it sends
	// callers on to the internal one.
	l, err := net.Listen("tcp", "127.0.0.2:0")
	require.NoError(t, err)
	public := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, internal.URL+"/secret", http.StatusFound)
	}))
	public.Listener = l
	public.Start()
	t.Cleanup(public.Close)

	c := Egress{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}}.Client()
	get := func(url string) error {
		req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
		require.NoError(t, err)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	assert.ErrorIs(t, get(internal.URL), ErrRefused, "by address")
	_, port, _ := net.SplitHostPort(internal.Listener.Addr().String())
	assert.ErrorIs(t, get("http://localhost:"+port), ErrRefused, "by a name that resolves to it")
	assert.ErrorIs(t, get(public.URL), ErrRefused, "through a redirect")
	assert.Zero(t, internalHits)
}

func TestParsePrefixes(t *testing.T) {
	got, err := ParsePrefixes([]string{"10.96.0.0/12", "192.168.1.7", "fd00::1/64"})
	require.NoError(t, err)
	assert.Equal(t, []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("192.168.1.7/32"), netip.MustParsePrefix("fd00::/64")}, got)
	_, err = ParsePrefixes([]string{"api.internal"})
	assert.ErrorContains(t, err, `"api.internal" is neither a CIDR nor an IP address`)
}
