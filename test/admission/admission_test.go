// Package admission tests NovaCron's admission webhooks and policies on
// envtest: the real API server calls the operator's webhook server, and the
// tests talk to it with the built kubectl, as a user would.
package admission

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/manager"
	"github.com/novacron/operator/test/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { os.Exit(testenv.Main(m, setUp, testenv.WithWebhooks())) }

func setUp(s *testenv.Suite) error {
	env = s.Env
	opts := manager.DefaultOptions()
	opts.MetricsAddr, opts.ProbeAddr = "0", "0"
	// A platform team that runs a second scheduler for VMs says so.
	opts.Admission.Schedulers = []string{novacronv1.DefaultSchedulerName, "my-scheduler"}
	stop, err := env.RunOperatorWithWebhooks(s.Dir, opts, nil)
	if err != nil {
		return err
	}
	s.Cleanup(stop)
	return env.InstallPolicies(s.Ctx)
}

func waitCompiled(t *testing.T, name string, gen int64) *novacronv1.VirtualMachinePolicy {
	t.Helper()
	p := &novacronv1.VirtualMachinePolicy{}
	require.Eventually(t, func() bool {
		if env.Client.Get(context.Background(), client.ObjectKey{Name: name}, p) != nil {
			return false
		}
		c := meta.FindStatusCondition(p.Status.Conditions, novacronv1.PolicyConditionCompiled)
		return c != nil && c.ObservedGeneration >= gen
	}, 20*time.Second, 20*time.Millisecond, "policy %s generation %d was never compiled", name, gen)
	return p
}

// operator waits until the built-in policies are in force.
func operator(t *testing.T) {
	t.Helper()
	for _, name := range []string{"vm-size-limits", "allowed-image-sources", "gpu-namespaces", "required-labels", "snapshot-retention", "encrypted-migration"} {
		p := waitCompiled(t, name, 1)
		require.True(t, meta.IsStatusConditionTrue(p.Status.Conditions, novacronv1.PolicyConditionCompiled), name)
	}
}

func sample(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(env.RepoRoot, "manifests", "samples", file))
	require.NoError(t, err)
	return string(b)
}

func rename(doc, from, to string) string {
	return strings.Replace(doc, "name: "+from, "name: "+to, 1)
}

func apply(t *testing.T, doc string) (stdout, stderr string, err error) {
	t.Helper()
	return env.KubectlIO(context.Background(), doc, "apply", "-f", "-")
}

func TestBadVMsAreRejectedNamingTheFields(t *testing.T) {
	operator(t)
	basic := rename(sample(t, "vm-basic.yaml"), "my-vm", "bad-vm")
	cases := []struct {
		name string
		doc  string
		want []string
	}{
		{"gateway outside the subnet",
			strings.Replace(rename(sample(t, "vm-multi-nic.yaml"), "multi-nic-vm", "bad-gw"), "gateway: 10.0.1.1", "gateway: 10.0.2.1", 1),
			[]string{`spec.template.spec.networks[0].ipv4.gateway: Invalid value: "10.0.2.1": must be inside the address's subnet 10.0.1.0/24`}},
		{"sr-iov network without a NetworkAttachmentDefinition",
			rename(sample(t, "vm-multi-nic.yaml"), "multi-nic-vm", "no-nad"),
			[]string{`spec.template.spec.networks[1].name: Invalid value: "data": sr-iov network "data" needs a NetworkAttachmentDefinition named data in namespace default`}},
		{"schedule that never fires",
			strings.Replace(rename(sample(t, "vm-snapshot-policy.yaml"), "my-vm-snapshotted", "feb-30"), `"0 2 * * *"`, `"0 2 30 2 *"`, 1),
			[]string{`spec.snapshotPolicy.schedule: Invalid value: "0 2 30 2 *": never fires`}},
		{"unknown time zone",
			strings.Replace(rename(sample(t, "vm-snapshot-policy.yaml"), "my-vm-snapshotted", "bad-tz"), "retention: 7", "retention: 7\n    timeZone: Mars/Olympus", 1),
			[]string{`spec.snapshotPolicy.timeZone: Invalid value: "Mars/Olympus": must be an IANA time zone`}},
		{"a built-in policy: too many vCPUs, and too much retention",
			strings.Replace(strings.Replace(rename(sample(t, "vm-snapshot-policy.yaml"), "my-vm-snapshotted", "huge"), "cpu: 2", "cpu: 96", 1), "retention: 7", "retention: 90", 1),
			[]string{`spec.template.spec.resources.cpu: Forbidden: policy vm-size-limits: 96 vCPUs is above the limit of 64; ask for fewer`,
				`spec.snapshotPolicy.retention: Forbidden: policy snapshot-retention: snapshot retention 90 is above the limit of 30`}},
		{"the seed's migrationPolicy fragment on its own: no template",
			"apiVersion: novacron.io/v1alpha1\nkind: VirtualMachine\nmetadata: {name: fragment, namespace: default}\nspec:\n  migrationPolicy: {allowLiveMigration: true, compression: true}\n",
			[]string{`spec.template: Required value: a VirtualMachine needs a template`}},
		{"a template without memory or image",
			"apiVersion: novacron.io/v1alpha1\nkind: VirtualMachine\nmetadata: {name: half, namespace: default}\nspec:\n  template:\n    spec:\n      resources: {cpu: 2}\n",
			[]string{`spec.template.spec.resources.memory: Required value`, `spec.template.spec.image.source: Required value`}},
		{"a built-in policy: plain http image",
			strings.Replace(basic, `"marketplace://ubuntu-22.04-lts"`, `"http://images.example.com/x.qcow2"`, 1),
			[]string{`spec.template.spec.image.source: Forbidden: policy allowed-image-sources: image source "http://images.example.com/x.qcow2" is not allowed`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := apply(t, tc.doc)
			require.Error(t, err, "accepted:\n%s", tc.doc)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
			assert.NotContains(t, err.Error(), "Invalid value: 0", "no zero values made up for what is missing")
		})
	}
}

func TestDefaultsAreFilledIn(t *testing.T) {
	operator(t)
	doc := `apiVersion: novacron.io/v1alpha1
kind: VirtualMachine
metadata:
  name: minimal
  namespace: default
spec:
  template:
    spec:
      resources: {cpu: 1, memory: 1Gi}
      image: {source: "marketplace://ubuntu-22.04-lts"}
`
	_, _, err := apply(t, doc)
	require.NoError(t, err)
	vm := &novacronv1.VirtualMachine{}
	require.NoError(t, env.Client.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: "minimal"}, vm))
	assert.Equal(t, novacronv1.DefaultSchedulerName, vm.Spec.Template.Spec.SchedulerName)
	assert.Equal(t, []novacronv1.Network{{Name: "default", Type: novacronv1.NetworkTypeBridge, IPv4: &novacronv1.IPv4Config{Method: novacronv1.IPv4DHCP}}}, vm.Spec.Template.Spec.Networks)
	require.NotNil(t, vm.Spec.Running)
	assert.True(t, *vm.Spec.Running)

	// What was set is never overridden.
	_, _, err = apply(t, strings.Replace(doc, "image:", "schedulerName: my-scheduler\n      image:", 1))
	require.NoError(t, err)
	require.NoError(t, env.Client.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: "minimal"}, vm))
	assert.Equal(t, "my-scheduler", vm.Spec.Template.Spec.SchedulerName)
}

func TestWarnPolicyShowsAKubectlWarning(t *testing.T) {
	operator(t)
	// The sample lives in a namespace allowed GPUs; in default it is warned.
	_, stderr, err := apply(t, strings.Replace(rename(sample(t, "vm-gpu.yaml"), "gpu-vm", "warned-gpu-vm"), "namespace: gpu-team", "namespace: default", 1))
	require.NoError(t, err, "a warn policy lets the VM in")
	assert.Contains(t, stderr, "Warning: policy gpu-namespaces: namespace default may not use GPUs; a cluster admin labels it novacron.io/gpu-allowed=true to allow them")
}

// Devices no node has are accepted (such a node may join) with a warning
// that says so and what there is.
func TestDevicesNoNodeHasAreWarnedOf(t *testing.T) {
	operator(t)
	doc := strings.NewReplacer("name: gpu-vm", "name: unknown-model", "model: tesla-t4", "model: a100-nonexistent", "namespace: gpu-team", "namespace: default").Replace(sample(t, "vm-gpu.yaml"))
	_, stderr, err := apply(t, doc)
	require.NoError(t, err)
	assert.Contains(t, stderr, "Warning: spec.template.spec.devices: no node has nvidia a100-nonexistent GPUs; the nodes have: no GPUs at all; the VM waits until a node has them")
	_, stderr, err = apply(t, strings.Replace(doc, "running: true", "running: false", 1))
	require.NoError(t, err)
	assert.NotContains(t, stderr, "no node has", "said when the devices change, not on every update")
}

func TestDryRunPolicyOnlyRecordsAnEvent(t *testing.T) {
	operator(t)
	noOwner := strings.Replace(rename(sample(t, "vm-basic.yaml"), "my-vm", "no-owner"), "  labels:\n    owner: team-a  # the built-in policy required-labels asks every VM for an owner\n", "", 1)
	require.NotContains(t, noOwner, "owner: team-a")
	_, stderr, err := apply(t, noOwner)
	require.NoError(t, err)
	assert.NotContains(t, stderr, "required-labels")
	events := func() string {
		out, err := env.Kubectl(context.Background(), "get", "events", "--field-selector", "involvedObject.name=no-owner,reason=PolicyDryRun", "-o", "custom-columns=MSG:.message,COUNT:.series.count", "--no-headers")
		require.NoError(t, err)
		return out
	}
	require.Eventually(t, func() bool {
		return strings.Contains(events(), `policy required-labels (dryrun) would deny: label "owner" is required`)
	}, 10*time.Second, 50*time.Millisecond)

	// The operator's own update (its finalizer) changes nothing a policy
	// judges, so it is not judged again.
	require.Eventually(t, func() bool {
		vm := &novacronv1.VirtualMachine{}
		return env.Client.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: "no-owner"}, vm) == nil && len(vm.Finalizers) > 0
	}, 10*time.Second, 50*time.Millisecond)
	out := events()
	assert.Equal(t, 1, strings.Count(out, "would deny"), out)
	assert.Contains(t, out, "<none>", "recorded once, not as a series: %s", out)
}

const teamPolicy = `apiVersion: novacron.io/v1alpha1
kind: VirtualMachinePolicy
metadata:
  name: team-cpu
spec:
  decisionPoints: [admission]
  enforcement: deny
  rego: |
    package team.cpu
    import data.novacron.lib
    deny contains {"msg": sprintf("at most %d vCPUs here", [LIMIT]), "field": "spec.template.spec.resources.cpu"} if {
      lib.vm_spec.resources.cpu > LIMIT
    }
`

func vmWithCPU(name string, cpu int) string {
	return fmt.Sprintf(`apiVersion: novacron.io/v1alpha1
kind: VirtualMachine
metadata:
  name: %s
  namespace: default
  labels: {owner: team-a}
spec:
  template:
    spec:
      resources: {cpu: %d, memory: 1Gi}
      image: {source: "marketplace://ubuntu-22.04-lts"}
`, name, cpu)
}

// Editing a policy changes admission without restarting anything; a policy
// that does not compile is refused with the compiler's line and column; one
// that got in anyway shows its errors while the last good version stays.
func TestPolicyHotReloadAndCompileErrors(t *testing.T) {
	operator(t)
	ctx := context.Background()
	_, _, err := apply(t, strings.ReplaceAll(teamPolicy, "LIMIT", "8"))
	require.NoError(t, err)
	waitCompiled(t, "team-cpu", 1)
	_, _, err = apply(t, vmWithCPU("team-vm", 16))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "spec.template.spec.resources.cpu: Forbidden: policy team-cpu: at most 8 vCPUs here")

	edited := time.Now()
	_, _, err = apply(t, strings.ReplaceAll(teamPolicy, "LIMIT", "32"))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, _, err := apply(t, vmWithCPU("team-vm", 16))
		return err == nil
	}, 10*time.Second, 20*time.Millisecond, "the edited policy never took effect")
	t.Logf("policy edit to admission change: %s", time.Since(edited).Round(time.Millisecond))

	// A broken edit is refused at admission with the compiler's position.
	broken := strings.Replace(strings.ReplaceAll(teamPolicy, "LIMIT", "32"), "lib.vm_spec.resources.cpu > 32", "lib.vm_spec.resources.cpu >", 1)
	_, _, err = apply(t, broken)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "spec.rego: Invalid value: \"(rego source)\": line 5, column")

	// Let one in around the webhook (as if it was created while the webhook was
	// not installed), then put the webhook back.
	vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	require.NoError(t, env.Client.Get(ctx, client.ObjectKey{Name: "novacron-validating-webhook"}, vwc))
	saved := vwc.DeepCopy()
	var kept []admissionregistrationv1.ValidatingWebhook
	for _, w := range vwc.Webhooks {
		if w.Name != "vvirtualmachinepolicy.novacron.io" {
			kept = append(kept, w)
		}
	}
	vwc.Webhooks = kept
	require.NoError(t, env.Client.Update(ctx, vwc))
	require.Eventually(t, func() bool {
		_, _, err := apply(t, broken)
		return err == nil
	}, 10*time.Second, 50*time.Millisecond)
	require.NoError(t, env.Client.Get(ctx, client.ObjectKey{Name: "novacron-validating-webhook"}, vwc))
	vwc.Webhooks = saved.Webhooks
	require.NoError(t, env.Client.Update(ctx, vwc))

	p := waitCompiled(t, "team-cpu", 3)
	c := meta.FindStatusCondition(p.Status.Conditions, novacronv1.PolicyConditionCompiled)
	assert.Equal(t, metav1.ConditionFalse, c.Status)
	assert.Contains(t, c.Message, "policy team-cpu does not compile: line 5, column")
	assert.Contains(t, c.Message, "generation 2 stays in force")
	out, err := env.Kubectl(ctx, "get", "vmpol", "team-cpu")
	require.NoError(t, err)
	assert.Contains(t, out, "False", "kubectl get vmpol shows it did not compile")
	// The last good version (at most 32) still decides.
	_, _, err = apply(t, vmWithCPU("team-vm-2", 40))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "policy team-cpu: at most 32 vCPUs here")
}

func TestMigrationAdmission(t *testing.T) {
	operator(t)
	_, _, err := apply(t, vmWithCPU("stays-put", 2))
	require.NoError(t, err)
	_, _, err = apply(t, "apiVersion: novacron.io/v1alpha1\nkind: VirtualMachineMigration\nmetadata: {name: move-it, namespace: default}\nspec: {vmName: stays-put}\n")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "spec.vmName: Forbidden: VirtualMachine stays-put does not allow live migration; set its spec.migrationPolicy.allowLiveMigration: true")
	assert.Contains(t, err.Error(), "only a Running VM can be live-migrated")

	_, _, err = apply(t, "apiVersion: novacron.io/v1alpha1\nkind: VirtualMachineMigration\nmetadata: {name: ghost, namespace: default}\nspec: {vmName: no-such-vm}\n")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `spec.vmName: Not found: "VirtualMachine default/no-such-vm"`)

	_, _, err = apply(t, "apiVersion: novacron.io/v1alpha1\nkind: VirtualMachineRestore\nmetadata: {name: r, namespace: default}\nspec: {vmName: stays-put, snapshotName: nope}\n")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `spec.snapshotName: Not found: "VirtualMachineSnapshot default/nope"`)
}

const frozenPolicy = `apiVersion: novacron.io/v1alpha1
kind: VirtualMachinePolicy
metadata:
  name: frozen-vm
spec:
  decisionPoints: [admission]
  rego: |
    package team.frozen
    deny contains {"msg": sprintf("%s of frozen-vm are refused", [input.kind]), "field": "spec.vmName"} if {
      input.kind != "VirtualMachine"
      input.object.spec.vmName == "frozen-vm"
    }
`

// Admission policies judge every NovaCron kind a user makes, not only
// VirtualMachines; the operator's own requests pass them (a policy must not
// stop what the operator finishes for users).
func TestAdmissionPoliciesJudgeEveryKindButNotTheOperator(t *testing.T) {
	operator(t)
	_, _, err := apply(t, frozenPolicy)
	require.NoError(t, err)
	waitCompiled(t, "frozen-vm", 1)
	_, _, err = apply(t, vmWithCPU("frozen-vm", 2))
	require.NoError(t, err)
	// env.Client is the identity the operator runs with here.
	snap := &novacronv1.VirtualMachineSnapshot{ObjectMeta: metav1.ObjectMeta{Name: "by-the-operator", Namespace: "default"},
		Spec: novacronv1.VirtualMachineSnapshotSpec{VMName: "frozen-vm"}}
	require.NoError(t, env.Client.Create(context.Background(), snap), "the operator's own request passes the policies")

	// Migrations are judged too (after their own checks: see the webhook's
	// unit tests, as a VM here never runs).
	for kind, spec := range map[string]string{
		"VirtualMachineSnapshot": "{vmName: frozen-vm}",
		"VirtualMachineRestore":  "{vmName: frozen-vm, snapshotName: by-the-operator}",
	} {
		_, _, err = apply(t, fmt.Sprintf("apiVersion: novacron.io/v1alpha1\nkind: %s\nmetadata: {name: user-made, namespace: default}\nspec: %s\n", kind, spec))
		require.Error(t, err, kind)
		assert.Contains(t, err.Error(), "spec.vmName: Forbidden: policy frozen-vm: "+kind+" of frozen-vm are refused")
	}
}
