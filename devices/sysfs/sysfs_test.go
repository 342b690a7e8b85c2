package sysfs

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// What Write lays out, Scan reads back: the links (driver, IOMMU group,
// PF and VFs) and values discovery goes by.
func TestWriteThenScan(t *testing.T) {
	root := filepath.Join(t.TempDir(), "sys")
	m := Machine{NUMANodes: 2, Devices: []PCIDevice{
		{Address: "0000:03:00.0", Vendor: "1a03", Device: "2000", Class: "030000", NUMANode: 0, Driver: "ast", BootVGA: true},
		{Address: "0000:5e:00.0", Vendor: "8086", Device: "1593", Class: "020000", NUMANode: 1, Driver: "ice", TotalVFs: 128, NetDevs: []string{"ens1f0"}, LinkUp: true},
		{Address: "0000:5e:01.0", Vendor: "8086", Device: "1889", Class: "020000", NUMANode: 1, Driver: "vfio-pci", PhysFn: "0000:5e:00.0"},
		{Address: "0000:5e:01.1", Vendor: "8086", Device: "1889", Class: "020000", NUMANode: 1, PhysFn: "0000:5e:00.0", IOMMUGroup: "77"},
	}}
	require.NoError(t, Write(root, m))
	got, err := Scan(root)
	require.NoError(t, err)
	require.Len(t, got, 4)
	assert.Equal(t, PCIDevice{Address: "0000:03:00.0", Vendor: "1a03", Device: "2000", Class: "030000", NUMANode: 0, IOMMUGroup: "0", Driver: "ast", BootVGA: true}, got[0])
	assert.Equal(t, PCIDevice{Address: "0000:5e:00.0", Vendor: "8086", Device: "1593", Class: "020000", NUMANode: 1, IOMMUGroup: "1", Driver: "ice",
		VFs: []string{"0000:5e:01.0", "0000:5e:01.1"}, NumVFs: 2, TotalVFs: 128, NetDevs: []string{"ens1f0"}, LinkUp: true}, got[1])
	assert.Equal(t, "0000:5e:00.0", got[2].PhysFn)
	assert.Equal(t, "vfio-pci", got[2].Driver)
	assert.Equal(t, "77", got[3].IOMMUGroup)
	assert.Equal(t, "", got[3].Driver)
	assert.Equal(t, 2, NUMANodes(root))

	require.NoError(t, Write(filepath.Join(t.TempDir(), "sys"), Machine{NoIOMMU: true, Devices: m.Devices[:1]}))
}

// Bad values in a device's files are reported with the device and file.
func TestScanRefusesMalformedIDs(t *testing.T) {
	root := filepath.Join(t.TempDir(), "sys")
	require.NoError(t, Write(root, Machine{Devices: []PCIDevice{{Address: "0000:3b:00.0", Vendor: "10de", Device: "1eb8", Class: "030200", NUMANode: -1}}}))
	require.NoError(t, os.WriteFile(filepath.Join(root, "bus", "pci", "devices", "0000:3b:00.0", "vendor"), []byte("0xzz\n"), 0o644))
	_, err := Scan(root)
	assert.ErrorContains(t, err, `PCI device 0000:3b:00.0: vendor "zz": want 4 hex digits`)
}

// The reader works on this machine's own sysfs, whatever it has.
func TestScanReadsThisMachine(t *testing.T) {
	if _, err := os.Stat("/sys/bus/pci/devices"); err != nil {
		t.Skip("no /sys/bus/pci on this machine")
	}
	devs, err := Scan("/sys")
	require.NoError(t, err)
	for _, d := range devs {
		assert.Len(t, d.Vendor, 4, d.Address)
		assert.Len(t, d.Class, 6, d.Address)
	}
}
