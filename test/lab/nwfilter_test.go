package lab

import (
	"context"
	"crypto/md5"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/novacron/operator/operator/provider"
	"github.com/novacron/operator/operator/provider/libvirt"
)

// nodeBridge is lab.sh's name for the bridge behind a node's network
// "default".
func nodeBridge(n string) string { return fmt.Sprintf("ncb%x", md5.Sum([]byte(n)))[:13] }

// A bridge NIC with clean-traffic (every VM's, as the domain builder makes
// them) lets the guest send from its own address only: on a real libvirtd
// and QEMU, a guest that pings from a spoofed address gets no answer, and the
// same guest without the filter does. The node's bridge plays the peer.
func TestRealQEMUCleanTrafficDropsSpoofedAddresses(t *testing.T) {
	needLab(t)
	labSh(t, "install")
	labSh(t, "guest")
	const n = "lab-nwfilter"
	uri := labSh(t, "start", n)
	t.Cleanup(func() { labSh(t, "stop", n) })
	br := nodeBridge(n)
	if out, err := exec.Command("ip", "addr", "replace", "10.77.0.1/24", "dev", br).CombinedOutput(); err != nil {
		t.Fatalf("ip addr on %s: %v: %s", br, err, out)
	}
	ctx := context.Background()
	c := libvirt.NewConnector(libvirt.URIRules{Local: true})
	t.Cleanup(c.Close)
	hv, err := c.Hypervisor(ctx, uri)
	require.NoError(t, err)

	for i, tc := range []struct {
		filtered bool
		spoof    string // what the spoofed ping got
	}{{true, "NOVACRON-NET-SPOOF-UNANSWERED"}, {false, "NOVACRON-NET-SPOOF-ANSWERED"}} {
		dom := fmt.Sprintf("nwfilter-%t", tc.filtered)
		d := provider.Domain{Name: dom, Type: "qemu", UUID: fmt.Sprintf("6a1b8a3e-0c52-4b2e-9d7c-00000000000%d", i), VCPUs: 1, MemoryBytes: 128 << 20,
			Kernel: "/var/lib/libvirt/images/vmlinuz", Initrd: "/var/lib/libvirt/images/initrd.img",
			Cmdline:       "console=ttyS0 novacron.net=10.77.0.10/24,10.77.0.1,10.77.0.66/24",
			SerialLogPath: "/var/log/libvirt/qemu/" + dom + "-serial.log",
			NICs:          []provider.NIC{{MAC: fmt.Sprintf("52:54:00:77:00:%02x", 10+i), Network: "default", CleanTraffic: tc.filtered, IP: "10.77.0.10"}}}
		require.NoError(t, hv.Define(ctx, d))
		require.NoError(t, hv.Start(ctx, dom))
		start := time.Now()
		deadline := time.Now().Add(2 * time.Minute)
		var log string
		for time.Now().Before(deadline) {
			if log = serialLogOn(n, dom); strings.Contains(log, "NOVACRON-NET-SPOOF-") {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		require.NoError(t, hv.Undefine(ctx, dom))
		require.Contains(t, log, "NOVACRON-NET-SPOOF-", "the guest's network check never finished; serial log:\n%s", log)
		assert.Contains(t, log, "NOVACRON-NET-OWN-ANSWERED", "its own address is let through (filtered: %t)", tc.filtered)
		assert.Contains(t, log, tc.spoof, "filtered: %t", tc.filtered)
		t.Logf("filtered %t: checked in %s", tc.filtered, time.Since(start).Round(100*time.Millisecond))
	}
}
