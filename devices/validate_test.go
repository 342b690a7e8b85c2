package devices

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"k8s.io/apimachinery/pkg/util/sets"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

func TestOnlyTheNodesFreeDevicesOfTheKindAskedForAreValid(t *testing.T) {
	hv := gpuHost()
	hv.Name = "gpu-1"
	req := &Request{GPUs: []GPURequest{{Vendor: "nvidia", Model: "tesla-t4", Count: 1}}, VFs: []VFRequest{{Network: "data", ResourceName: "intel.com/sriov_data"}}}
	gpu := func(pcis ...string) []novacronv1.AssignedDevice {
		var out []novacronv1.AssignedDevice
		for _, p := range pcis {
			out = append(out, novacronv1.AssignedDevice{Type: novacronv1.DeviceTypeGPU, PCIAddress: p})
		}
		return out
	}
	vf := map[string]string{"data": "0000:5e:02.1"}
	none := sets.New[string]()

	assert.Empty(t, Validate(novacronv1.DeviceAssignment{GPUs: gpu("0000:3b:00.0"), VFs: vf}, req, hv, none))
	for a, want := range map[*novacronv1.DeviceAssignment]string{
		{GPUs: gpu("0000:01:00.0"), VFs: vf}:                 "GPU 0000:01:00.0 is not one of node gpu-1's GPUs",
		{GPUs: gpu("0000:af:00.0"), VFs: vf}:                 "is not of a kind the VM asks for",
		{GPUs: gpu("0000:3b:00.0", "0000:3c:00.0"), VFs: vf}: "or more than it asks",
		{VFs: vf}:                   "1 tesla-t4 short",
		{GPUs: gpu("0000:3b:00.0")}: "0 VFs assigned for 1 sr-iov networks",
		{GPUs: gpu("0000:3b:00.0"), VFs: map[string]string{"data": "0000:99:00.0"}}: "is not in node gpu-1's pool intel.com/sriov_data",
	} {
		assert.Contains(t, Validate(*a, req, hv, none), want)
	}
	assert.Equal(t, "0000:3b:00.0 is another VM's", Validate(novacronv1.DeviceAssignment{GPUs: gpu("0000:3b:00.0"), VFs: vf}, req, hv, sets.New("0000:3b:00.0")))
	assert.Empty(t, Validate(novacronv1.DeviceAssignment{}, &Request{}, hv, none), "no devices asked, none given")
}
