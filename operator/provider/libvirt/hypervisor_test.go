package libvirt

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	golibvirt "libvirt.org/go/libvirt"

	"github.com/novacron/operator/devenv/simnode"
	"github.com/novacron/operator/operator/provider"
	"github.com/novacron/operator/operator/provider/providertest"
)

func newNode(t *testing.T, name string) string {
	t.Helper()
	uri, err := simnode.Write(t.TempDir(), simnode.Node{Name: name, CPUs: 8, MemoryBytes: 32 << 30, Images: []string{"base.qcow2"}})
	require.NoError(t, err)
	return uri
}

func testDomain(name string) provider.Domain { return providertest.Domain(name) }

func TestDomainLifecycle(t *testing.T) {
	ctx := context.Background()
	c := NewConnector(URIRules{Test: true})
	t.Cleanup(c.Close)
	h, err := c.Hypervisor(ctx, newNode(t, "n1"))
	require.NoError(t, err)

	info, err := h.Info(ctx)
	require.NoError(t, err)
	assert.Equal(t, int32(8), info.CPUs)
	assert.Equal(t, int64(32<<30), info.MemoryBytes)
	providertest.Lifecycle(t, h, "base.qcow2")
}

// The test driver cannot take uploads; the lab test covers a real upload.
func TestUploadIsUnsupportedByTheTestDriver(t *testing.T) {
	ctx := context.Background()
	c := NewConnector(URIRules{Test: true})
	t.Cleanup(c.Close)
	h, err := c.Hypervisor(ctx, newNode(t, "n1"))
	require.NoError(t, err)
	_, err = h.UploadVolume(ctx, "default", "x.iso", []byte("data"))
	assert.ErrorIs(t, err, provider.ErrUnsupported)
	_, err = h.VolumePath(ctx, "default", "x.iso")
	assert.ErrorIs(t, err, provider.ErrNotFound, "a failed upload leaves no empty volume")
}

func TestMissingImageAndPoolAreClearErrors(t *testing.T) {
	ctx := context.Background()
	c := NewConnector(URIRules{Test: true})
	t.Cleanup(c.Close)
	h, err := c.Hypervisor(ctx, newNode(t, "n1"))
	require.NoError(t, err)
	providertest.MissingImage(t, h)
}

// Each simulated node is its own host: a domain on one is not on the other,
// and callers of the same URI share one connection (and so one host).
func TestNodesAreSeparateAndConnectionsShared(t *testing.T) {
	ctx := context.Background()
	c := NewConnector(URIRules{Test: true})
	t.Cleanup(c.Close)
	u1, u2 := newNode(t, "n1"), newNode(t, "n2")
	h1, err := c.Hypervisor(ctx, u1)
	require.NoError(t, err)
	h2, err := c.Hypervisor(ctx, u2)
	require.NoError(t, err)
	require.NoError(t, h1.Define(ctx, testDomain("only-on-1")))
	_, err = h2.State(ctx, "only-on-1")
	assert.ErrorIs(t, err, provider.ErrNotFound)
	names, err := h1.Domains(ctx)
	require.NoError(t, err)
	assert.Equal(t, []string{"only-on-1"}, names)
	names, err = h2.Domains(ctx)
	require.NoError(t, err)
	assert.Empty(t, names)
	h1again, err := c.Hypervisor(ctx, u1)
	require.NoError(t, err)
	_, err = h1again.State(ctx, "only-on-1")
	assert.NoError(t, err)
}

func TestUnreachableBacksOffThenReconnects(t *testing.T) {
	ctx := context.Background()
	c := NewConnector(URIRules{Test: true})
	c.MinBackoff = 20 * time.Millisecond
	t.Cleanup(c.Close)
	uri := newNode(t, "n1")
	var down atomic.Bool
	var dials atomic.Int32
	c.Dial = func(u string) (*golibvirt.Connect, error) {
		dials.Add(1)
		if down.Load() {
			return nil, errors.New("connection refused")
		}
		return golibvirt.NewConnect(u)
	}
	down.Store(true)
	_, err := c.Hypervisor(ctx, uri)
	require.ErrorIs(t, err, provider.ErrUnreachable)
	assert.Contains(t, err.Error(), "connection refused")
	_, err = c.Hypervisor(ctx, uri)
	require.ErrorIs(t, err, provider.ErrUnreachable)
	assert.True(t, strings.Contains(err.Error(), "next try in"), err.Error())
	assert.Equal(t, int32(1), dials.Load(), "no dial during the backoff")

	down.Store(false)
	require.Eventually(t, func() bool {
		_, err := c.Hypervisor(ctx, uri)
		return err == nil
	}, 5*time.Second, 10*time.Millisecond)
	assert.Equal(t, int32(2), dials.Load())
}

func TestDomainXML(t *testing.T) {
	d := testDomain("vm")
	d.Disks = []provider.Disk{{Path: "/p/root.qcow2", Format: "qcow2"}, {Path: "/p/cidata.iso", Format: "raw", CDROM: true}}
	d.NICs = append(d.NICs, provider.NIC{MAC: "52:54:00:00:00:02", PCIAddress: "0000:5e:02.1"},
		provider.NIC{MAC: "52:54:00:00:00:03", Network: "apps", CleanTraffic: true, IP: "10.0.1.10"},
		provider.NIC{MAC: "52:54:00:00:00:04", Network: "apps", CleanTraffic: true})
	d.HostDevices = []string{"0000:3b:00.0"}
	d.Kernel, d.Initrd, d.Cmdline = "/p/vmlinuz", "/p/initrd.img", "console=ttyS0"
	doc, err := domainXML("kvm", d)
	require.NoError(t, err)
	for _, want := range []string{
		`<domain type="kvm">`, `<vcpu>2</vcpu>`, `<memory unit="KiB">524288</memory>`, `<acpi></acpi>`,
		`<source file="/p/root.qcow2"></source>`, `<target dev="vda" bus="virtio"></target>`,
		`<disk type="file" device="cdrom" snapshot="no">`, `<readonly></readonly>`,
		`<interface type="network">`, `<mac address="52:54:00:00:00:01"></mac>`,
		`<interface type="hostdev" managed="yes">`, `<address type="pci" domain="0x0000" bus="0x5e" slot="0x02" function="0x1">`,
		`<hostdev mode="subsystem" type="pci" managed="yes">`, `bus="0x3b"`,
		`<serial type="file">`,
		`<filterref filter="clean-traffic">`, `<parameter name="IP" value="10.0.1.10"></parameter>`,
		`<parameter name="CTRL_IP_LEARNING" value="dhcp"></parameter>`,
		`<kernel>/p/vmlinuz</kernel>`, `<initrd>/p/initrd.img</initrd>`, `<cmdline>console=ttyS0</cmdline>`,
	} {
		assert.Contains(t, doc, want)
	}
	d.HostDevices = []string{"3b:00"}
	_, err = domainXML("kvm", d)
	assert.ErrorContains(t, err, `PCI address "3b:00" is not of the form`)
}

// Root disks are thin: a node's pool (100 GiB on the test driver) holds more
// VMs than their disks' sizes add up to, as a real qcow2 pool does.
func TestRootDisksAreThin(t *testing.T) {
	ctx := context.Background()
	c := NewConnector(URIRules{Test: true})
	t.Cleanup(c.Close)
	h, err := c.Hypervisor(ctx, newNode(t, "thin"))
	require.NoError(t, err)
	for _, name := range []string{"a.qcow2", "b.qcow2", "c.qcow2", "d.qcow2"} {
		_, err := h.EnsureVolume(ctx, provider.Volume{Pool: "default", Name: name, CapacityBytes: 50 << 30, Format: "qcow2", BackingVolume: "base.qcow2", BackingFormat: "qcow2"})
		require.NoError(t, err, name)
	}
}

func TestSnapshots(t *testing.T) {
	ctx := context.Background()
	c := NewConnector(URIRules{Test: true})
	t.Cleanup(c.Close)
	h, err := c.Hypervisor(ctx, newNode(t, "snap"))
	require.NoError(t, err)
	s, again := providertest.Snapshots(t, h, "base.qcow2")
	assert.True(t, s.Quiesced, "the test driver's guest agent freezes")
	assert.False(t, again.Quiesced, "whether it was quiesced is not known afterwards: reported crash-consistent")
}

// A new volume larger than the pool has free is refused (thin disks that
// outgrow their pool stop every guest on it); one that exists is found.
func TestAVolumeLargerThanThePoolsFreeSpaceIsRefused(t *testing.T) {
	ctx := context.Background()
	c := NewConnector(URIRules{Test: true})
	t.Cleanup(c.Close)
	h, err := c.Hypervisor(ctx, newNode(t, "n1")) // the test driver's pool: 98 GiB free
	require.NoError(t, err)
	_, err = h.EnsureVolume(ctx, provider.Volume{Pool: "default", Name: "huge.qcow2", CapacityBytes: 2 << 40, Format: "qcow2"})
	assert.ErrorIs(t, err, provider.ErrNoSpace)
	assert.ErrorContains(t, err, "needs 2Ti")
	_, err = h.VolumePath(ctx, "default", "huge.qcow2")
	assert.ErrorIs(t, err, provider.ErrNotFound, "nothing made")
	_, err = h.EnsureVolume(ctx, provider.Volume{Pool: "default", Name: "fits.qcow2", CapacityBytes: 50 << 30, Format: "qcow2"})
	assert.NoError(t, err)
}
