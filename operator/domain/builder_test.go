package domain_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/domain"
	"github.com/novacron/operator/operator/fakecluster"
	"github.com/novacron/operator/operator/provider"
	"github.com/novacron/operator/operator/provider/fake"
)

type setup struct {
	b     *domain.Builder
	hvObj *novacronv1.Hypervisor
	host  *fake.Host
	c     *fakecluster.Cluster
}

func newSetup(t *testing.T) setup {
	t.Helper()
	// tiny boots from a kernel that is not staged on the node.
	c := fakecluster.New(t)
	c.Catalog(t, map[string]string{"ubuntu": "ubuntu.qcow2"})
	cm := &corev1.ConfigMap{}
	require.NoError(t, c.Client.Get(t.Context(), client.ObjectKey{Namespace: fakecluster.CatalogNamespace, Name: domain.CatalogConfigMap}, cm))
	cm.Data["tiny"] = "volume: ubuntu.qcow2\nkernel: vmlinuz\ninitrd: initrd.img\ncmdline: console=ttyS0\n"
	// A platform team's typo, which only VMs naming it may notice.
	cm.Data["typo"] = "volume: ubuntu.qcow2\nformat: vmdk\n"
	require.NoError(t, c.Client.Update(t.Context(), cm))
	_, hvObj := c.Node(t, "node-1", 8, "32Gi")
	host := c.Hosts.Host(hvObj.Spec.URI)
	return setup{b: &domain.Builder{APIReader: c.Client, Namespace: fakecluster.CatalogNamespace, SerialLogDir: "/var/log/libvirt/qemu"}, hvObj: hvObj, host: host, c: c}
}

func testVM() *novacronv1.VirtualMachine {
	v := &novacronv1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "team", UID: "uid-web"}}
	v.Spec.Template.Spec.Resources = novacronv1.VMResources{CPU: 2, Memory: resource.MustParse("4Gi")}
	v.Spec.Template.Spec.Image.Source = "marketplace://ubuntu"
	v.Spec.Template.Spec.Networks = []novacronv1.Network{{Name: "default", Type: novacronv1.NetworkTypeBridge}}
	return v
}

func reason(err error) string {
	var spec *domain.SpecError
	if errors.As(err, &spec) {
		return spec.Reason
	}
	return ""
}

func TestBuildMakesTheDisksAndSaysWhatItDid(t *testing.T) {
	s := newSetup(t)
	v := testVM()
	built, err := s.b.Build(t.Context(), v, novacronv1.DeviceAssignment{}, s.hvObj, s.host)
	require.NoError(t, err)
	d := built.Domain
	assert.Equal(t, "team_web", d.Name)
	assert.Equal(t, "uid-web", d.UUID, "one VM can only ever be one domain")
	assert.Equal(t, "/var/log/libvirt/qemu/team_web-serial.log", d.SerialLogPath)
	assert.Len(t, d.Disks, 1)
	assert.True(t, s.host.HasVolume("default", "team_web-uid-web-root.qcow2"))
	assert.False(t, built.CloudInitAttached)
	assert.Contains(t, built.CloudInitNote, "runs without it")

	s.host.AcceptUploads()
	built, err = s.b.Build(t.Context(), v, novacronv1.DeviceAssignment{}, s.hvObj, s.host)
	require.NoError(t, err)
	assert.True(t, built.CloudInitAttached)
	require.Len(t, built.Domain.Disks, 2)
	assert.True(t, built.Domain.Disks[1].CDROM)
	assert.Zero(t, s.host.Calls()["Define"], "Build defines nothing: the controller does")
}

func TestBuildRefusesWhatRetryingCannotFix(t *testing.T) {
	s := newSetup(t)
	cases := map[string]func(*novacronv1.VirtualMachine){
		novacronv1.ReasonImageNotFound:   func(v *novacronv1.VirtualMachine) { v.Spec.Template.Spec.Image.Source = "marketplace://nope" },
		novacronv1.ReasonBadImageCatalog: func(v *novacronv1.VirtualMachine) { v.Spec.Template.Spec.Image.Source = "marketplace://typo" },
		novacronv1.ReasonNodeTooSmall:    func(v *novacronv1.VirtualMachine) { v.Spec.Template.Spec.Resources.CPU = 9 },
		novacronv1.ReasonImageNotOnNode:  func(v *novacronv1.VirtualMachine) { v.Spec.Template.Spec.Image.Source = "marketplace://tiny" },
		novacronv1.ReasonDevicesNotAssigned: func(v *novacronv1.VirtualMachine) {
			v.Spec.Template.Spec.Devices = []novacronv1.Device{{Type: novacronv1.DeviceTypeGPU, Vendor: "nvidia", Count: 1}}
		},
		novacronv1.ReasonUserDataSecretNotFound: func(v *novacronv1.VirtualMachine) {
			v.Spec.Template.Spec.UserDataSecretRef = &novacronv1.SecretKeyRef{Name: "missing"}
		},
	}
	for want, change := range cases {
		v := testVM()
		change(v)
		_, err := s.b.Build(t.Context(), v, novacronv1.DeviceAssignment{}, s.hvObj, s.host)
		assert.Equal(t, want, reason(err), "%v", err)
	}

	// What may pass (the node down) is not the VM's fault.
	s.host.SetDown(true)
	_, err := s.b.Build(t.Context(), testVM(), novacronv1.DeviceAssignment{}, s.hvObj, s.host)
	assert.ErrorIs(t, err, provider.ErrUnreachable)
	assert.Empty(t, reason(err))
}

func TestBuildPassesAssignedDevicesThrough(t *testing.T) {
	s := newSetup(t)
	v := testVM()
	v.Spec.Template.Spec.Devices = []novacronv1.Device{{Type: novacronv1.DeviceTypeGPU, Vendor: "nvidia", Count: 1}}
	v.Spec.Template.Spec.Networks = append(v.Spec.Template.Spec.Networks, novacronv1.Network{Name: "data", Type: novacronv1.NetworkTypeSRIOV})
	built, err := s.b.Build(t.Context(), v, novacronv1.DeviceAssignment{
		GPUs: []novacronv1.AssignedDevice{{Type: novacronv1.DeviceTypeGPU, PCIAddress: "0000:3b:00.0"}},
		VFs:  map[string]string{"data": "0000:5e:02.1"},
	}, s.hvObj, s.host)
	require.NoError(t, err)
	assert.Equal(t, []string{"0000:3b:00.0"}, built.Domain.HostDevices)
	assert.Equal(t, "0000:5e:02.1", built.Domain.NICs[1].PCIAddress)
	assert.Empty(t, built.Domain.NICs[0].PCIAddress)
}

// Every bridge NIC sends only as itself (libvirt's clean-traffic): its static
// address when it has one, else what DHCP gave it.
func TestBridgeNICsSendOnlyAsThemselves(t *testing.T) {
	s := newSetup(t)
	v := testVM()
	v.Spec.Template.Spec.Networks = []novacronv1.Network{{Name: "default", Type: novacronv1.NetworkTypeBridge,
		IPv4: &novacronv1.IPv4Config{Method: novacronv1.IPv4Static, Address: "10.0.1.10/24"}}}
	built, err := s.b.Build(t.Context(), v, novacronv1.DeviceAssignment{}, s.hvObj, s.host)
	require.NoError(t, err)
	require.Len(t, built.Domain.NICs, 1)
	assert.True(t, built.Domain.NICs[0].CleanTraffic)
	assert.Equal(t, "10.0.1.10", built.Domain.NICs[0].IP)
	v.Spec.Template.Spec.Networks[0].IPv4 = nil
	built, err = s.b.Build(t.Context(), v, novacronv1.DeviceAssignment{}, s.hvObj, s.host)
	require.NoError(t, err)
	assert.True(t, built.Domain.NICs[0].CleanTraffic)
	assert.Empty(t, built.Domain.NICs[0].IP, "learnt from DHCP")
}
