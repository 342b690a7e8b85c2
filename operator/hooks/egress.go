package hooks

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// Egress says which addresses a tenant's HTTP hook may reach. A hook's URL
// is the tenant's to choose, and the operator calls it from inside the
// cluster: without this it reaches the cloud's metadata service, the API
// server, kubelets, or the operator's own endpoints.
type Egress struct {
	// Deny holds the admin's internal ranges (the API server, nodes, a BMC
	// network), refused on top of AlwaysDenied.
	Deny []netip.Prefix
	// Allow is let through even when denied: dev and tests, whose hook
	// servers listen on loopback. Empty in production.
	Allow []netip.Prefix
}

// AlwaysDenied are the ranges no tenant hook reaches: loopback (the
// operator's own metrics, health and webhook servers), link-local (cloud
// metadata at 169.254.169.254, fd00:ec2::254 on AWS over IPv6), unspecified
// and multicast.
var AlwaysDenied = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("fd00:ec2::254/128"),
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("::/128"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("ff00::/8"),
}

// ErrRefused is a hook address the egress rules refuse.
var ErrRefused = errors.New("address refused")

// Check says why addr may not be reached, or nil.
func (e Egress) Check(addr netip.Addr) error {
	addr = addr.Unmap() // ::ffff:127.0.0.1 is 127.0.0.1
	for _, p := range e.Allow {
		if p.Contains(addr) {
			return nil
		}
	}
	for _, set := range [][]netip.Prefix{AlwaysDenied, e.Deny} {
		for _, p := range set {
			if p.Contains(addr) {
				return fmt.Errorf("%w: %s is in %s, which hooks may not reach", ErrRefused, addr, p)
			}
		}
	}
	return nil
}

// maxRedirects bounds how far a hook is followed; each hop is checked.
const maxRedirects = 3

// Client is an HTTP client for tenant hooks. The check runs on the address
// actually dialled, after name resolution, so a name that resolves (or is
// re-pointed) to an internal address is refused too, and so is every
// redirect's target. No proxy from the environment is used: it would dial
// on the hook's behalf.
func (e Egress) Client() *http.Client {
	dialer := &net.Dialer{
		Timeout: 10 * time.Second,
		Control: func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("%w: %s", ErrRefused, address)
			}
			return e.Check(ap.Addr())
		},
	}
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           dialer.DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          16,
			IdleConnTimeout:       30 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 0, // the call's own deadline bounds it
		},
		CheckRedirect: func(_ *http.Request, via []*http.Request) error {
			if len(via) > maxRedirects {
				return fmt.Errorf("more than %d redirects", maxRedirects)
			}
			return nil
		},
	}
}

// ParsePrefixes reads CIDRs (or single addresses) as flags give them.
func ParsePrefixes(values []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(values))
	for _, v := range values {
		if p, err := netip.ParsePrefix(v); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(v)
		if err != nil {
			return nil, fmt.Errorf("%q is neither a CIDR nor an IP address", v)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}
