package webhook

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/yaml"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

func loadSample(t testing.TB, name string) *novacronv1.VirtualMachine {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "manifests", "samples", name))
	require.NoError(t, err)
	vm := &novacronv1.VirtualMachine{}
	require.NoError(t, yaml.Unmarshal(raw, vm))
	return vm
}

func TestRunningVMRefusesHardwareChanges(t *testing.T) {
	old := loadSample(t, "vm-basic.yaml")
	old.Status.Phase = novacronv1.VMRunning
	changed := old.DeepCopy()
	changed.Spec.Template.Spec.Resources.CPU = 4
	changed.Spec.Template.Spec.Image.Source = "marketplace://debian-12"
	errs := validateRunningChanges(old, changed)
	require.Len(t, errs, 2)
	assert.Equal(t, "spec.template.spec.resources: Forbidden: cannot change while the VM is Running; stop it first (spec.running: false), then change it", errs[0].Error())
	assert.Equal(t, "spec.template.spec.image", errs[1].Field)

	changed.Spec.Running = ptr.To(false)
	assert.Empty(t, validateRunningChanges(old, changed), "stopping it in the same change is fine")
	old.Status.Phase = novacronv1.VMStopped
	changed.Spec.Running = ptr.To(true)
	assert.Empty(t, validateRunningChanges(old, changed), "a stopped VM may change")
	old.Status.Phase = novacronv1.VMRunning
	labelsOnly := old.DeepCopy()
	labelsOnly.Spec.Template.Metadata.Labels = map[string]string{"a": "b"}
	assert.Empty(t, validateRunningChanges(old, labelsOnly), "labels may change while running")
}

// A VM that failed keeps its launcher pod, which the scheduler and quota
// counted at the old size: no resize until it is stopped.
func TestAVMWithABoundPodRefusesHardwareChangesWhateverThePhase(t *testing.T) {
	old := loadSample(t, "vm-basic.yaml")
	old.Status.Phase, old.Status.LauncherPod, old.Status.NodeName = novacronv1.VMFailed, "web-launcher", "compute-1"
	changed := old.DeepCopy()
	changed.Spec.Template.Spec.Resources.CPU = 64
	changed.Spec.Template.Spec.Devices = []novacronv1.Device{{Type: novacronv1.DeviceTypeGPU, Vendor: "nvidia", Count: 1}}
	errs := validateRunningChanges(old, changed)
	require.Len(t, errs, 2)
	assert.Equal(t, "spec.template.spec.resources: Forbidden: cannot change while launcher pod web-launcher holds the VM's place on node compute-1; stop the VM first (spec.running: false), then change it", errs[0].Error())
	assert.Equal(t, "spec.template.spec.devices", errs[1].Field)

	fixImage := old.DeepCopy()
	fixImage.Spec.Template.Spec.Image.Source = "marketplace://debian-12"
	assert.Empty(t, validateRunningChanges(old, fixImage), "a failed VM's image may be fixed: the pod does not depend on it")
	old.Status.LauncherPod = ""
	assert.Empty(t, validateRunningChanges(old, changed), "without a pod it may change")
}

func TestValidateVMSpec(t *testing.T) {
	for _, name := range []string{"vm-basic.yaml", "vm-live-migration.yaml", "vm-snapshot-policy.yaml", "vm-gpu.yaml", "vm-multi-nic.yaml", "vm-cloud-init.yaml", "vm-node-affinity.yaml"} {
		assert.Empty(t, ValidateVMSpec(loadSample(t, name)), "sample %s", name)
	}
	vm := loadSample(t, "vm-multi-nic.yaml")
	vm.Spec.Template.Spec.Networks[0].IPv4.Gateway = "10.0.1.10"
	errs := ValidateVMSpec(vm)
	require.Len(t, errs, 1)
	assert.Equal(t, `spec.template.spec.networks[0].ipv4.gateway: Invalid value: "10.0.1.10": must differ from the VM's own address`, errs[0].Error())

	vm = loadSample(t, "vm-snapshot-policy.yaml")
	for schedule, want := range map[string]string{
		"0 2 30 2 *":      "never fires",
		"61 * * * *":      "must be a 5-field cron schedule",
		"@daily":          "",
		"0 2 * * MON-FRI": "",
		"0 0 29 2 *":      "", // leap years exist
	} {
		vm.Spec.SnapshotPolicy.Schedule = schedule
		errs := ValidateVMSpec(vm)
		if want == "" {
			assert.Empty(t, errs, schedule)
		} else if assert.Len(t, errs, 1, schedule) {
			assert.Contains(t, errs[0].Error(), want)
		}
	}
}

func TestDefaulterNeverOverrides(t *testing.T) {
	vm := &novacronv1.VirtualMachine{}
	vm.Spec.Template.Spec.Resources = novacronv1.VMResources{CPU: 1, Memory: resource.MustParse("1Gi")}
	require.NoError(t, VMDefaulter{}.Default(context.Background(), vm))
	assert.Equal(t, novacronv1.DefaultSchedulerName, vm.Spec.Template.Spec.SchedulerName)
	require.Len(t, vm.Spec.Template.Spec.Networks, 1)
	assert.True(t, *vm.Spec.Running)

	set := loadSample(t, "vm-multi-nic.yaml")
	set.Spec.Running = ptr.To(false)
	set.Spec.Template.Spec.SchedulerName = "other"
	before := set.DeepCopy()
	require.NoError(t, VMDefaulter{}.Default(context.Background(), set))
	assert.Equal(t, before, set)
}

// The validator and defaulter never panic, whatever the VM holds.
func FuzzValidateVM(f *testing.F) {
	entries, err := os.ReadDir(filepath.Join("..", "..", "manifests", "samples"))
	require.NoError(f, err)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "vm-") {
			raw, err := os.ReadFile(filepath.Join("..", "..", "manifests", "samples", e.Name()))
			require.NoError(f, err)
			f.Add(raw)
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		vm := &novacronv1.VirtualMachine{}
		if yaml.Unmarshal(raw, vm) != nil {
			return
		}
		old := vm.DeepCopy()
		old.Status.Phase = novacronv1.VMRunning
		_ = VMDefaulter{}.Default(context.Background(), vm)
		_ = ValidateVMSpec(vm)
		_ = validateRunningChanges(old, vm)
	})
}

// Sizes a tenant gives are above zero, whole bytes and bounded; the launcher
// pod's labels and annotations are what Kubernetes accepts on a pod.
func TestSizesAndTemplateMetadataAreBounded(t *testing.T) {
	for memory, want := range map[string]string{
		"4Gi":                  "",
		"-4Gi":                 `spec.template.spec.resources.memory: Invalid value: "-4Gi": must be above zero`,
		"0":                    "must be above zero",
		"1099511627776000001u": "must be a whole number of bytes",
		"1500m":                "must be a whole number of bytes",
		"32Ti":                 "must be at most 16Ti",
	} {
		vm := loadSample(t, "vm-basic.yaml")
		vm.Spec.Template.Spec.Resources.Memory = resource.MustParse(memory)
		errs := ValidateVMSpec(vm)
		if want == "" {
			assert.Empty(t, errs, memory)
		} else if assert.Len(t, errs, 1, memory) {
			assert.Contains(t, errs[0].Error(), want, memory)
		}
	}
	vm := loadSample(t, "vm-basic.yaml")
	vm.Spec.Template.Spec.Resources.Disk = ptr.To(resource.MustParse("-1Gi"))
	vm.Spec.Template.Metadata.Labels = map[string]string{"bad key!": "v", "app": strings.Repeat("x", 64)}
	vm.Spec.Template.Metadata.Annotations = map[string]string{"big": strings.Repeat("x", 256*1024)}
	var fields []string
	for _, e := range ValidateVMSpec(vm) {
		fields = append(fields, e.Field)
	}
	assert.ElementsMatch(t, []string{"spec.template.spec.resources.disk", "spec.template.metadata.labels", "spec.template.metadata.labels", "spec.template.metadata.annotations"}, fields)
}

// A network is judged when it is added: a VM from before bridge networks
// needed a NetworkAttachmentDefinition can still be stopped (its start
// finds the network missing), but gets no new network without one.
func TestNetworksAreJudgedWhenAdded(t *testing.T) {
	c := fake.NewClientBuilder().Build()
	v := &VMValidator{APIReader: c}
	old := loadSample(t, "vm-basic.yaml")
	old.Namespace = "team"
	old.Spec.Template.Spec.Networks = []novacronv1.Network{{Name: "br0", Type: novacronv1.NetworkTypeBridge}}
	stopped := old.DeepCopy()
	stopped.Spec.Running = ptr.To(false)
	assert.Empty(t, v.validateNetworks(context.Background(), stopped, old))
	added := stopped.DeepCopy()
	added.Spec.Template.Spec.Networks = append(added.Spec.Template.Spec.Networks, novacronv1.Network{Name: "mgmt", Type: novacronv1.NetworkTypeBridge})
	errs := v.validateNetworks(context.Background(), added, old)
	require.Len(t, errs, 1)
	assert.Equal(t, "spec.template.spec.networks[1].name", errs[0].Field)
	assert.Len(t, v.validateNetworks(context.Background(), old, nil), 1, "on create every network is judged")
}
