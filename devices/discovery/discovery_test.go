package discovery

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/utils/ptr"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/novacron/operator/devices/sysfs"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.yaml from what discovery publishes now")

func pciIDs(t *testing.T) *PCIIDs {
	t.Helper()
	ids, err := LoadPCIIDs("testdata/no-such-file", "testdata/pci.ids")
	require.NoError(t, err)
	return ids
}

func machine(t *testing.T, m sysfs.Machine) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "sys")
	require.NoError(t, sysfs.Write(root, m))
	return root
}

// Each fixture machine publishes exactly what its golden file holds (read
// it: it is the review of what an admin sees); the asserts beside it pin
// what matters most.
func TestFixtureMachinesPublishExactly(t *testing.T) {
	cases := []struct {
		name  string
		m     sysfs.Machine
		cfg   Config
		nvml  NVML
		check func(t *testing.T, inv Inventory)
	}{
		{name: "dgx-h100", m: dgxH100(), nvml: dgxNVML(), cfg: Config{GPUs: []string{"10de:2330"}},
			check: func(t *testing.T, inv Inventory) {
				require.Len(t, inv.GPUs, 8, "the eight H100s, not the NVSwitches or the BMC display")
				assert.Equal(t, "h100-80gb-hbm3", inv.GPUs[0].Model, "NVML names the model where it runs")
				assert.Equal(t, int64(81559<<20), inv.GPUs[0].MemoryBytes)
				assert.Equal(t, []int{0, 0, 0, 0, 1, 1, 1, 1}, numa(inv.GPUs))
				assert.Contains(t, inv.Skipped, Skipped{PCIAddress: "0000:03:00.0", Why: "the host's boot display"})
			}},
		{name: "t4-vfio", m: t4VFIO(),
			check: func(t *testing.T, inv Inventory) {
				require.Len(t, inv.GPUs, 2, "vfio-pci binding marks them passthrough candidates without config")
				assert.Equal(t, "tesla-t4", inv.GPUs[1].Model, "from pci.ids where NVML does not run")
				assert.Equal(t, "nvidia", inv.GPUs[1].Vendor)
				assert.Equal(t, []int{0, 1}, numa(inv.GPUs))
			}},
		{name: "e810", m: e810(), cfg: Config{SRIOV: []SRIOVConfig{{PF: "ens1f0", ResourceName: "intel.com/sriov_data"}, {PF: "0000:5e:00.1", ResourceName: "intel.com/sriov_mgmt"}}},
			check: func(t *testing.T, inv Inventory) {
				require.Len(t, inv.VFs, 8)
				assert.Equal(t, "0000:5e:01.7", inv.VFs[7].PCIAddress, "in virtfn order")
				assert.True(t, inv.VFs[0].LinkUp)
				assert.Contains(t, inv.Skipped, Skipped{PCIAddress: "0000:5e:00.1", Why: "sriov[1]: 0000:5e:00.1 has no VFs enabled (sriov_numvfs is 0)"})
			}},
		{name: "no-iommu", m: noIOMMU(), cfg: Config{GPUs: []string{"0000:3b:00.0"}, SRIOV: []SRIOVConfig{{PF: "ens1f0", ResourceName: "intel.com/sriov_data"}}},
			check: func(t *testing.T, inv Inventory) {
				assert.Empty(t, inv.GPUs, "nothing passes through without an IOMMU")
				assert.Empty(t, inv.VFs)
				assert.Len(t, inv.Skipped, 9)
				assert.Equal(t, 1, inv.NUMANodes)
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := machine(t, c.m)
			inv, err := Discover(root, c.cfg, pciIDs(t), c.nvml)
			require.NoError(t, err)
			c.check(t, inv)
			got, err := Report(c.name, root, inv)
			require.NoError(t, err)
			golden := filepath.Join("testdata", c.name+".golden.yaml")
			if *update {
				require.NoError(t, os.WriteFile(golden, got, 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err, "run go test ./devices/discovery -update once, and read the file")
			assert.Equal(t, string(want), string(got))
		})
	}
}

func numa(gpus []GPU) []int {
	var out []int
	for _, g := range gpus {
		out = append(out, g.NUMANode)
	}
	return out
}

// A GPU bound to the host's own driver is no passthrough candidate unless
// the admin lists it; a listed one the admin also excludes is not offered.
func TestOnlyCandidatesAreOffered(t *testing.T) {
	root := machine(t, dgxH100())
	inv, err := Discover(root, Config{}, pciIDs(t), dgxNVML())
	require.NoError(t, err)
	assert.Empty(t, inv.GPUs)
	assert.Contains(t, inv.Skipped, Skipped{PCIAddress: "0000:18:00.0", Why: "bound to nvidia and not in the device config's gpus"})

	inv, err = Discover(root, Config{GPUs: []string{"0000:18:00.0", "0000:03:00.0"}, Exclude: []string{"0000:18:00.0"}}, pciIDs(t), dgxNVML())
	require.NoError(t, err)
	assert.Empty(t, inv.GPUs, "excluded wins over listed; the boot display is never offered")
}

// Without NVML (no driver, or the library missing) the GPUs are named from
// pci.ids; an admin model map makes such nodes agree with NVML ones.
func TestModelsWithoutNVML(t *testing.T) {
	root := machine(t, dgxH100())
	inv, err := Discover(root, Config{GPUs: []string{"10de:2330"}}, pciIDs(t), fakeNVML{err: ErrNoNVML})
	require.NoError(t, err)
	require.Len(t, inv.GPUs, 8)
	assert.Equal(t, "h100-sxm5-80gb", inv.GPUs[0].Model)
	assert.Zero(t, inv.GPUs[0].MemoryBytes)

	inv, err = Discover(root, Config{GPUs: []string{"10de:2330"}, Models: map[string]string{"10de:2330": "h100-80gb-hbm3"}}, &PCIIDs{}, nil)
	require.NoError(t, err)
	assert.Equal(t, "h100-80gb-hbm3", inv.GPUs[0].Model)
	assert.Equal(t, "nvidia", inv.GPUs[0].Vendor, "known vendors need no pci.ids")

	_, err = Discover(root, Config{}, pciIDs(t), fakeNVML{err: errors.New("NVML init: Unknown Error")})
	assert.ErrorContains(t, err, "Unknown Error", "a broken driver is reported, not taken for no driver")
}

// An unhealthy GPU stays published, with a NoSchedule taint: never
// NoExecute, which would evict the launcher pod of the VM that has it.
func TestUnhealthyGPUsAreTaintedNoSchedule(t *testing.T) {
	root := machine(t, dgxH100())
	inv, err := Discover(root, Config{GPUs: []string{"10de:2330"}}, pciIDs(t), dgxNVML())
	require.NoError(t, err)
	slices, err := ResourceSlices("dgx-1", root, inv)
	require.NoError(t, err)
	require.Len(t, slices, 1)
	var tainted []string
	for _, d := range slices[0].Spec.Devices {
		for _, taint := range d.Taints {
			assert.Equal(t, resourceapi.DeviceTaintEffectNoSchedule, taint.Effect)
			tainted = append(tainted, d.Name)
		}
	}
	assert.Equal(t, []string{"gpu-0000-ba-00-0"}, tainted)
}

// A device another DRA driver (NVIDIA's, here in its vfio shape) already
// publishes on the node is not offered again.
func TestDevicesOfAnotherDriverAreNotOfferedTwice(t *testing.T) {
	root := machine(t, t4VFIO())
	inv, err := Discover(root, Config{}, pciIDs(t), nil)
	require.NoError(t, err)
	theirs := resourceapi.ResourceSlice{Spec: resourceapi.ResourceSliceSpec{Driver: "gpu.nvidia.com", NodeName: ptr.To("node-1"),
		Devices: []resourceapi.Device{{Name: "gpu-0", Attributes: map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{
			"resource.kubernetes.io/pciBusID": {StringValue: ptr.To("0000:3b:00.0")}}}}}}
	elsewhere := *theirs.DeepCopy()
	elsewhere.Spec.NodeName = ptr.To("node-2")
	elsewhere.Spec.Devices[0].Attributes["resource.kubernetes.io/pciBusID"] = resourceapi.DeviceAttribute{StringValue: ptr.To("0000:af:00.0")}
	left := WithoutOthers(inv, "node-1", []resourceapi.ResourceSlice{theirs, elsewhere})
	require.Len(t, left.GPUs, 1)
	assert.Equal(t, "0000:af:00.0", left.GPUs[0].PCIAddress, "the same address on another node is another device")
	assert.Contains(t, left.Skipped, Skipped{PCIAddress: "0000:3b:00.0", Why: "published by DRA driver gpu.nvidia.com"})
	assert.Len(t, inv.GPUs, 2, "the inventory given is left as it was")
}

func TestConfigErrorsNameTheField(t *testing.T) {
	for cfg, want := range map[*Config]string{
		{GPUs: []string{"3b:00.0"}}:                                 "gpus[0] \"3b:00.0\"",
		{Models: map[string]string{"10de:1eb8": "Tesla T4"}}:        "models[\"10de:1eb8\"] \"Tesla T4\"",
		{SRIOV: []SRIOVConfig{{PF: "ens1f0"}}}:                      "sriov[0].resourceName: required",
		{SRIOV: []SRIOVConfig{{ResourceName: "intel.com/sriov_a"}}}: "sriov[0].pf: required",
		{Exclude: []string{"10de:1eb8"}}:                            "exclude[0] \"10de:1eb8\"",
	} {
		assert.ErrorContains(t, cfg.Validate(), want)
	}
	assert.NoError(t, Config{GPUs: []string{"0000:3b:00.0", "10de:1eb8"}, Exclude: []string{"0000:af:00.0"}}.Validate())
}

func TestSlugsAndBusIDs(t *testing.T) {
	assert.Equal(t, "h100-sxm5-80gb", Slug("H100 SXM5 80GB"))
	assert.Equal(t, "0000:3b:00.0", NormalizeBusID("00000000:3B:00.0"))
	assert.Equal(t, "10000:01:00.0", NormalizeBusID("00010000:01:00.0"), "a VMD domain is not domain 0")
	assert.Equal(t, "gpu-0000-3b-00-0", DeviceName(TypeGPU, "0000:3b:00.0"))
}

// The real NVML, where this machine has NVIDIA's driver: every GPU it
// reports is a PCI device sysfs shows, with a name, UUID and memory.
// Read-only: it binds and unbinds nothing.
func TestSystemNVML(t *testing.T) {
	devs, err := sysfs.Scan("/sys")
	require.NoError(t, err)
	var nvidia []string
	for _, d := range devs {
		if d.IsGPU() && d.Driver == "nvidia" {
			nvidia = append(nvidia, d.Address)
		}
	}
	gpus, err := SystemNVML{}.GPUs(nvidia)
	if errors.Is(err, ErrNoNVML) {
		t.Skip("no NVIDIA driver on this machine: the real NVML path runs on a GPU machine")
	}
	require.NoError(t, err)
	require.NotEmpty(t, gpus)
	for _, g := range gpus {
		_, err := os.Stat(filepath.Join("/sys/bus/pci/devices", g.PCIAddress))
		assert.NoError(t, err, "NVML's %s is in sysfs", g.PCIAddress)
		assert.NotEmpty(t, g.Name)
		assert.NotEmpty(t, g.UUID)
		assert.Positive(t, g.MemoryBytes)
		t.Logf("%s %s %s %d MiB unhealthy=%q", g.PCIAddress, g.Name, g.UUID, g.MemoryBytes>>20, g.Unhealthy)
	}
}

// One device is offered once: a PF named twice in the config (by name and
// by address) makes one pool, and a GPU that is also a VF of a listed PF is
// not offered again as a VF.
func TestADeviceIsOfferedOnce(t *testing.T) {
	m := e810()
	m.Devices = append(m.Devices, sysfs.PCIDevice{Address: "0000:5e:02.0", Vendor: "10de", Device: "1eb8", Class: "030200", NUMANode: 0, Driver: "vfio-pci", PhysFn: "0000:5e:00.0"})
	root := machine(t, m)
	inv, err := Discover(root, Config{SRIOV: []SRIOVConfig{{PF: "ens1f0", ResourceName: "intel.com/sriov_data"}, {PF: "0000:5e:00.0", ResourceName: "intel.com/sriov_other"}}}, pciIDs(t), nil)
	require.NoError(t, err)
	assert.Len(t, inv.GPUs, 1)
	assert.Len(t, inv.VFs, 8, "the GPU function is not a VF of the pool too")
	assert.Contains(t, inv.Skipped, Skipped{PCIAddress: "0000:5e:00.0", Why: "sriov[1]: 0000:5e:00.0 is sriov[0]'s physical function already"})
	assert.Contains(t, inv.Skipped, Skipped{PCIAddress: "0000:5e:02.0", Why: "offered as a GPU already"})
	devs, err := Devices(root, inv)
	require.NoError(t, err)
	names := map[string]bool{}
	for _, d := range devs {
		assert.False(t, names[d.Name], "device %s published twice", d.Name)
		names[d.Name] = true
	}
	assert.Contains(t, inv.Bus, "0000:5e:00.1", "the bus lists what is not offered too")
}

// A GPU NVML cannot reach (lost off the bus as far as the driver is
// concerned) is published tainted, the others as usual; a GPU rebound to
// vfio-pci keeps what NVML said of it.
func TestNVMLFactsSurviveALostGPUAndARebinding(t *testing.T) {
	root := machine(t, dgxH100())
	nv := dgxNVML()
	nv.gpus = nv.gpus[1:] // 0000:18:00.0 is lost
	rem := RememberNVML(nv)
	inv, err := Discover(root, Config{GPUs: []string{"10de:2330"}}, pciIDs(t), rem)
	require.NoError(t, err)
	require.Len(t, inv.GPUs, 8)
	assert.Equal(t, "NVML cannot reach the GPU: ERROR_GPU_IS_LOST", inv.GPUs[0].Unhealthy)
	assert.Equal(t, "h100-80gb-hbm3", inv.GPUs[1].Model)

	// The kubelet plugin binds 0000:2a:00.0 to vfio-pci for a VM.
	drv := filepath.Join(root, "bus", "pci", "devices", "0000:2a:00.0", "driver")
	require.NoError(t, os.Remove(drv))
	require.NoError(t, os.Symlink("../../../bus/pci/drivers/vfio-pci", drv))
	inv, err = Discover(root, Config{GPUs: []string{"10de:2330"}}, pciIDs(t), rem)
	require.NoError(t, err)
	assert.Equal(t, "vfio-pci", inv.GPUs[1].Driver)
	assert.Equal(t, "h100-80gb-hbm3", inv.GPUs[1].Model, "not pci.ids' h100-sxm5-80gb")
	assert.Equal(t, int64(81559<<20), inv.GPUs[1].MemoryBytes)
	assert.Equal(t, "GPU-6f7a1c2e-0b4d-4e1a-9c3b-000000000001", inv.GPUs[1].UUID)
}

func TestChunks(t *testing.T) {
	devs := make([]resourceapi.Device, 130)
	var sizes []int
	for _, c := range Chunks(devs) {
		sizes = append(sizes, len(c))
	}
	assert.Equal(t, []int{64, 64, 2}, sizes)
	assert.Len(t, Chunks(nil), 1, "an empty pool is one empty slice")
	assert.Empty(t, Chunks(nil)[0])
}
