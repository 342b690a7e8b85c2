package libvirt

import (
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/novacron/operator/operator/provider"
)

// URIRules say which libvirt URIs the operator connects to. A Hypervisor's
// URI is followed with the operator's identity and TLS keys, so a URI that
// runs a command (qemu+ext, ?command=), skips certificate checks
// (?no_verify), or reaches the operator's own host (a local socket) is not
// something a Hypervisor object may choose on its own. By default only
// qemu+tls://host/system is allowed; the rest is an admin's (or dev's) opt-in.
type URIRules struct {
	// TCP allows qemu+tcp://host/system: no encryption, and authentication
	// only as libvirtd's SASL setup has it. For labs on a private network.
	TCP bool
	// Local allows qemu:///system, with a ?socket= path: the libvirtd of
	// the operator's own host.
	Local bool
	// Test allows libvirt's test driver (test:///default, or a node file
	// path as novacron dev writes): simulated nodes.
	Test bool
}

// safeQuery are the URI parameters that only tune a TLS or TCP connection.
var safeQuery = []string{"pkipath", "tls_priority"}

// Check says why uri is refused, naming spec.uri, or nil.
func (r URIRules) Check(uri string) error {
	refuse := func(format string, a ...any) error {
		return fmt.Errorf("%w: spec.uri %q: %s", provider.ErrRefused, uri, fmt.Sprintf(format, a...))
	}
	u, err := url.Parse(uri)
	if err != nil {
		return refuse("not a URI: %v", err)
	}
	// libvirt splits parameters on ";" as well as "&", and Go's parser drops
	// what it cannot read: read them strictly, so that what is checked is
	// what libvirt gets.
	if u.Opaque != "" || u.Fragment != "" || strings.Contains(u.RawQuery, ";") {
		return refuse("not a plain libvirt URI (no ';' in parameters, no fragment)")
	}
	query, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return refuse("parameters: %v", err)
	}
	switch u.Scheme {
	case "test":
		if !r.Test {
			return refuse("the test driver is for simulated nodes; the operator allows it with --hypervisor-uris=test")
		}
		return nil
	case "qemu+tls":
	case "qemu+tcp":
		if !r.TCP {
			return refuse("qemu+tcp is unencrypted; use qemu+tls://HOST/system, or allow it with --hypervisor-uris=tcp on a trusted network")
		}
	case "qemu", "qemu+unix":
		if !r.Local {
			return refuse("a local libvirtd socket is the operator's own host; allow it with --hypervisor-uris=local")
		}
		if u.Host != "" || u.Path != "/system" {
			return refuse("a local URI must be qemu:///system")
		}
		for k := range query {
			if k != "socket" {
				return refuse("parameter %q is not allowed (only socket)", k)
			}
		}
		return nil
	default:
		return refuse("scheme %q is not allowed: use qemu+tls://HOST/system", u.Scheme)
	}
	if u.User != nil {
		return refuse("no user name: the client certificate says who connects")
	}
	if u.Hostname() == "" {
		return refuse("a host is needed, as in qemu+tls://HOST/system")
	}
	if u.Path != "/system" {
		return refuse("the path must be /system (the system libvirtd), not %q", u.Path)
	}
	for k := range query {
		if !slices.Contains(safeQuery, k) {
			return refuse("parameter %q is not allowed (only %s)", k, strings.Join(safeQuery, ", "))
		}
	}
	return nil
}

// ParseURIRules reads a comma-separated list of what to allow besides
// qemu+tls: tcp, local, test.
func ParseURIRules(s string) (URIRules, error) {
	var r URIRules
	for f := range strings.SplitSeq(s, ",") {
		switch strings.TrimSpace(f) {
		case "", "tls":
		case "tcp":
			r.TCP = true
		case "local":
			r.Local = true
		case "test":
			r.Test = true
		default:
			return r, fmt.Errorf("hypervisor URIs: %q is not one of tls, tcp, local, test", f)
		}
	}
	return r, nil
}
