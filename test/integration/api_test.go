package integration

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

func TestAllCRDsInstalled(t *testing.T) {
	var crds apiextensionsv1.CustomResourceDefinitionList
	require.NoError(t, env.Client.List(context.Background(), &crds))
	got := map[string]apiextensionsv1.ResourceScope{}
	for _, c := range crds.Items {
		if c.Spec.Group == novacronv1.GroupVersion.Group {
			got[c.Spec.Names.Kind] = c.Spec.Scope
		}
	}
	assert.Equal(t, map[string]apiextensionsv1.ResourceScope{
		"VirtualMachine":          apiextensionsv1.NamespaceScoped,
		"VirtualMachineMigration": apiextensionsv1.NamespaceScoped,
		"VirtualMachineSnapshot":  apiextensionsv1.NamespaceScoped,
		"VirtualMachineRestore":   apiextensionsv1.NamespaceScoped,
		"Hypervisor":              apiextensionsv1.ClusterScoped,
		"VirtualMachinePolicy":    apiextensionsv1.ClusterScoped,
	}, got)
}

// The seed README's examples, and the other samples, are all accepted as they are.
func TestSamplesAreAccepted(t *testing.T) {
	ctx := context.Background()
	samples := filepath.Join(env.RepoRoot, "manifests", "samples")
	out, err := env.Kubectl(ctx, "apply", "-f", samples)
	require.NoError(t, err)
	files, err := filepath.Glob(filepath.Join(samples, "*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	t.Cleanup(func() {
		for _, f := range files {
			// A namespace stays: with no controller manager here it would
			// stay Terminating, and later tests use it.
			if !strings.HasPrefix(filepath.Base(f), "namespace-") {
				_, _ = env.Kubectl(ctx, "delete", "--wait=false", "-f", f)
			}
		}
	})
	for _, f := range files {
		obj := readSample(t, filepath.Base(f))
		if obj.GroupVersionKind().Group != novacronv1.GroupVersion.Group {
			continue // the network a sample VM names
		}
		assert.Contains(t, out, strings.ToLower(obj.GetKind())+".novacron.io/"+obj.GetName()+" created", "sample %s", f)
	}

	// Defaults from the schema are filled in: the migration reason and the GPU count.
	var mig novacronv1.VirtualMachineMigration
	require.NoError(t, env.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: "my-vm-migratable-move"}, &mig))
	assert.Equal(t, novacronv1.MigrationManual, mig.Spec.Reason)
	var vm novacronv1.VirtualMachine
	require.NoError(t, env.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: "multi-nic-vm"}, &vm))
	require.Len(t, vm.Spec.Template.Spec.Networks, 2)
	assert.Equal(t, "10.0.1.10/24", vm.Spec.Template.Spec.Networks[0].IPv4.Address)
	assert.Equal(t, novacronv1.NetworkTypeSRIOV, vm.Spec.Template.Spec.Networks[1].Type)
}

func TestInvalidObjectsAreRejectedNamingTheField(t *testing.T) {
	cases := []struct {
		name   string
		sample string
		mutate func(u *unstructured.Unstructured)
		want   []string // substrings of the API server's message
	}{
		{"zero cpu", "vm-basic.yaml", set(int64(0), "spec", "template", "spec", "resources", "cpu"),
			[]string{"spec.template.spec.resources.cpu", "greater than or equal to 1"}},
		{"negative cpu", "vm-basic.yaml", set(int64(-2), "spec", "template", "spec", "resources", "cpu"),
			[]string{"spec.template.spec.resources.cpu", "greater than or equal to 1"}},
		{"memory not a quantity", "vm-basic.yaml", set("lots", "spec", "template", "spec", "resources", "memory"),
			[]string{"spec.template.spec.resources.memory"}},
		{"unknown network type", "vm-basic.yaml", setNetwork(0, "type", "vlan"),
			[]string{"spec.template.spec.networks[0].type", `Unsupported value: "vlan"`, `"bridge"`, `"sr-iov"`}},
		{"static method without address", "vm-basic.yaml", setNetwork(0, "ipv4", map[string]any{"method": "static"}),
			[]string{"spec.template.spec.networks[0].ipv4.address", "address is required when method is static"}},
		{"address not a CIDR", "vm-multi-nic.yaml", setNetwork(0, "ipv4", map[string]any{"method": "static", "address": "10.0.1.10", "gateway": "10.0.1.1"}),
			[]string{"spec.template.spec.networks[0].ipv4.address", "must be an IPv4 address with prefix length"}},
		{"gateway not an IP", "vm-multi-nic.yaml", setNetwork(0, "ipv4", map[string]any{"method": "static", "address": "10.0.1.10/24", "gateway": "router"}),
			[]string{"spec.template.spec.networks[0].ipv4.gateway", "must be an IPv4 address"}},
		{"bad cron schedule", "vm-snapshot-policy.yaml", set("every day at 2", "spec", "snapshotPolicy", "schedule"),
			[]string{"spec.snapshotPolicy.schedule", "should match"}},
		{"cron with four fields", "vm-snapshot-policy.yaml", set("0 2 * *", "spec", "snapshotPolicy", "schedule"),
			[]string{"spec.snapshotPolicy.schedule"}},
		{"retention 0", "vm-snapshot-policy.yaml", set(int64(0), "spec", "snapshotPolicy", "retention"),
			[]string{"spec.snapshotPolicy.retention", "greater than or equal to 1"}},
		{"bandwidth fast", "vm-live-migration.yaml", set("fast", "spec", "migrationPolicy", "bandwidth"),
			[]string{"spec.migrationPolicy.bandwidth", "should match"}},
		{"gpu count 0", "vm-gpu.yaml", setDevice(0, "count", int64(0)),
			[]string{"spec.template.spec.devices[0].count", "greater than or equal to 1"}},
		{"unknown device type", "vm-gpu.yaml", setDevice(0, "type", "fpga"),
			[]string{"spec.template.spec.devices[0].type", `Unsupported value: "fpga"`}},
		{"image without a scheme", "vm-basic.yaml", set("ubuntu", "spec", "template", "spec", "image", "source"),
			[]string{"spec.template.spec.image.source"}},
		{"missing template", "vm-basic.yaml", func(u *unstructured.Unstructured) { unstructured.RemoveNestedField(u.Object, "spec", "template") },
			[]string{"spec.template", "Required value"}},
		{"user data twice", "vm-cloud-init.yaml", set(map[string]any{"name": "keys"}, "spec", "template", "spec", "userDataSecretRef"),
			[]string{"spec.template.spec", "set userData or userDataSecretRef, not both"}},
		{"hook with neither http nor job", "vm-basic.yaml", set(map[string]any{"timeoutSeconds": int64(5)}, "spec", "template", "spec", "lifecycle", "preStart"),
			[]string{"spec.template.spec.lifecycle.preStart", "set exactly one of http or job"}},
		{"hook failure policy", "vm-basic.yaml", set(map[string]any{"http": map[string]any{"url": "http://hooks.local/pre"}, "failurePolicy": "Maybe"}, "spec", "template", "spec", "lifecycle", "preStart"),
			[]string{"spec.template.spec.lifecycle.preStart.failurePolicy", `Unsupported value: "Maybe"`}},
		{"migration without vm", "migration.yaml", func(u *unstructured.Unstructured) { unstructured.RemoveNestedField(u.Object, "spec", "vmName") },
			[]string{"spec.vmName", "Required value"}},
		{"migration reason", "migration.yaml", set("Whim", "spec", "reason"),
			[]string{"spec.reason", `Unsupported value: "Whim"`}},
		{"restore without snapshot", "restore.yaml", func(u *unstructured.Unstructured) { unstructured.RemoveNestedField(u.Object, "spec", "snapshotName") },
			[]string{"spec.snapshotName", "Required value"}},
		{"policy without decision points", "policy.yaml", set([]any{}, "spec", "decisionPoints"),
			[]string{"spec.decisionPoints", "at least 1 items"}},
		{"policy enforcement", "policy.yaml", set("block", "spec", "enforcement"),
			[]string{"spec.enforcement", `Unsupported value: "block"`}},
		{"hypervisor overcommit zero", "hypervisor.yaml", set("0", "spec", "overcommit", "cpu"),
			[]string{"spec.overcommit.cpu", "must be a ratio greater than 0"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := readSample(t, tc.sample)
			u.SetName("invalid-" + regexp.MustCompile(`[^a-z0-9]+`).ReplaceAllString(tc.name, "-"))
			tc.mutate(u)
			err := env.Client.Create(context.Background(), u)
			require.Error(t, err, "the API server accepted an invalid object")
			assert.True(t, apierrors.IsInvalid(err), "want an Invalid error, got %v", err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

// Immutable fields stay as they were created.
func TestMigrationTargetIsImmutable(t *testing.T) {
	ctx := context.Background()
	mig := &novacronv1.VirtualMachineMigration{
		ObjectMeta: metav1.ObjectMeta{Name: "immutable-vm-name", Namespace: "default"},
		Spec:       novacronv1.VirtualMachineMigrationSpec{VMName: "a"},
	}
	require.NoError(t, env.Client.Create(ctx, mig))
	t.Cleanup(func() { _ = env.Client.Delete(ctx, mig) })
	mig.Spec.VMName = "b"
	err := env.Client.Update(ctx, mig)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "spec.vmName")
	assert.Contains(t, err.Error(), "vmName is immutable")
}

func TestKubectlGetShowsPrinterColumns(t *testing.T) {
	ctx := context.Background()
	u := readSample(t, "vm-basic.yaml")
	u.SetName("columns-vm")
	require.NoError(t, env.Client.Create(ctx, u))
	t.Cleanup(func() { _ = env.Client.Delete(ctx, u) })

	var vm novacronv1.VirtualMachine
	require.NoError(t, env.Client.Get(ctx, client.ObjectKeyFromObject(u), &vm))
	vm.Status = novacronv1.VirtualMachineStatus{
		Phase:      novacronv1.VMRunning,
		NodeName:   "node-7",
		Interfaces: []novacronv1.InterfaceStatus{{Name: "default", MAC: "52:54:00:12:34:56", IPAddress: "10.0.0.5"}},
	}
	require.NoError(t, env.Client.Status().Update(ctx, &vm))

	for _, resource := range []string{"virtualmachines", "vm"} {
		out, err := env.Kubectl(ctx, "get", resource, "columns-vm")
		require.NoError(t, err)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		require.Len(t, lines, 2, out)
		assert.Equal(t, []string{"NAME", "RUNNING", "PHASE", "NODE", "IP", "AGE"}, strings.Fields(lines[0]))
		assert.Equal(t, []string{"columns-vm", "true", "Running", "node-7", "10.0.0.5"}, strings.Fields(lines[1])[:5])
	}

	// -o wide adds the VM's size, image, devices and why it is (not) ready.
	vm.Status.Devices = []novacronv1.AssignedDevice{{Type: novacronv1.DeviceTypeGPU, Vendor: "nvidia", Model: "tesla-t4", PCIAddress: "0000:3b:00.0"}}
	vm.Status.Conditions = []metav1.Condition{{Type: novacronv1.ConditionReady, Status: metav1.ConditionTrue, Reason: novacronv1.ReasonRunning, Message: "running", LastTransitionTime: metav1.Now()}}
	require.NoError(t, env.Client.Status().Update(ctx, &vm))
	out, err := env.Kubectl(ctx, "get", "vm", "columns-vm", "-o", "wide")
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 2, out)
	assert.Equal(t, []string{"NAME", "RUNNING", "PHASE", "NODE", "IP", "AGE", "VCPUS", "MEMORY", "IMAGE", "DEVICES", "REASON"}, strings.Fields(lines[0]))
	assert.Equal(t, []string{"2", "4Gi", "marketplace://ubuntu-22.04-lts", "tesla-t4", "Running"}, strings.Fields(lines[1])[6:])

	// Every kind answers to the short names a kubectl user would guess, and the
	// novacron category lists them together.
	for _, short := range []string{"vmim", "vmsnap", "vmrestore", "hv", "vmpol"} {
		_, err := env.Kubectl(ctx, "get", short)
		assert.NoError(t, err, short)
	}
	out, err = env.Kubectl(ctx, "get", "novacron")
	require.NoError(t, err)
	assert.Contains(t, out, "virtualmachine.novacron.io/columns-vm")
}

func TestKubectlExplainShowsFieldDocs(t *testing.T) {
	out, err := env.Kubectl(context.Background(), "explain", "vm.spec.template.spec.resources")
	require.NoError(t, err)
	for _, want := range []string{
		"FIELD: resources",
		"Resources are the virtual hardware",
		"cpu\t<integer> -required-",
		"CPU is the number of virtual CPUs",
		"memory\t<Object> -required-",
		"Memory is the guest memory",
		"disk\t<Object>",
	} {
		assert.Contains(t, out, want)
	}
}

func readSample(t *testing.T, name string) *unstructured.Unstructured {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(env.RepoRoot, "manifests", "samples", name))
	require.NoError(t, err)
	u := &unstructured.Unstructured{}
	require.NoError(t, yaml.Unmarshal(data, &u.Object))
	if u.GetNamespace() == "" && u.GetKind() != "Hypervisor" && u.GetKind() != "VirtualMachinePolicy" {
		u.SetNamespace("default")
	}
	return u
}

func set(value any, path ...string) func(*unstructured.Unstructured) {
	return func(u *unstructured.Unstructured) {
		if err := unstructured.SetNestedField(u.Object, value, path...); err != nil {
			panic(err)
		}
	}
}

func setListItem(list []string, i int, field string, value any) func(*unstructured.Unstructured) {
	return func(u *unstructured.Unstructured) {
		items, _, _ := unstructured.NestedSlice(u.Object, list...)
		items[i].(map[string]any)[field] = value
		if err := unstructured.SetNestedSlice(u.Object, items, list...); err != nil {
			panic(err)
		}
	}
}

func setNetwork(i int, field string, value any) func(*unstructured.Unstructured) {
	return setListItem([]string{"spec", "template", "spec", "networks"}, i, field, value)
}

func setDevice(i int, field string, value any) func(*unstructured.Unstructured) {
	return setListItem([]string{"spec", "template", "spec", "devices"}, i, field, value)
}
