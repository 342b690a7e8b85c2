package policies

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

func policy(name string, enforcement novacronv1.Enforcement, rego string) *novacronv1.VirtualMachinePolicy {
	return &novacronv1.VirtualMachinePolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 1},
		Spec:       novacronv1.VirtualMachinePolicySpec{Rego: rego, Enforcement: enforcement, DecisionPoints: []novacronv1.DecisionPoint{novacronv1.DecisionAdmission}},
	}
}

const maxCPU8 = `package team.limits
import data.novacron.lib
deny contains {"msg": "at most 8 vCPUs", "field": "spec.template.spec.resources.cpu"} if lib.vm_spec.resources.cpu > 8
warn contains "big VM" if lib.vm_spec.resources.cpu > 4
`

func vmInput(cpu int, nsLabels map[string]string) AdmissionInput {
	return AdmissionInput{Operation: "CREATE", Kind: "VirtualMachine", Namespace: Namespace{Name: "team-a", Labels: nsLabels},
		Object: map[string]any{"spec": map[string]any{"template": map[string]any{"spec": map[string]any{"resources": map[string]any{"cpu": cpu}}}}}}
}

func TestEnforcementModes(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		enforcement novacronv1.Enforcement
		denials     int
		warnings    []string
		dryrun      int
	}{
		{novacronv1.EnforcementDeny, 1, []string{"policy limits: big VM"}, 0},
		{novacronv1.EnforcementWarn, 0, []string{"policy limits: at most 8 vCPUs", "policy limits: big VM"}, 0},
		{novacronv1.EnforcementDryRun, 0, nil, 1},
	} {
		t.Run(string(tc.enforcement), func(t *testing.T) {
			e, err := NewEngine()
			require.NoError(t, err)
			require.NoError(t, e.Upsert(ctx, policy("limits", tc.enforcement, maxCPU8)))
			res, err := e.Admit(ctx, vmInput(16, nil))
			require.NoError(t, err)
			assert.Len(t, res.Denials, tc.denials)
			assert.Equal(t, tc.warnings, res.Warnings)
			assert.Len(t, res.DryRun, tc.dryrun)
			result := map[novacronv1.Enforcement]string{novacronv1.EnforcementDeny: "deny", novacronv1.EnforcementWarn: "warn", novacronv1.EnforcementDryRun: "dryrun"}[tc.enforcement]
			assert.Positive(t, testutil.ToFloat64(evaluations.WithLabelValues("limits", "admission", result)), "novacron_policy_evaluations_total counts it")
			if tc.denials > 0 {
				assert.Equal(t, Violation{Policy: "limits", Enforcement: novacronv1.EnforcementDeny, Message: "at most 8 vCPUs", Field: "spec.template.spec.resources.cpu"}, res.Denials[0])
			}
			small, err := e.Admit(ctx, vmInput(2, nil))
			require.NoError(t, err)
			assert.Empty(t, small.Denials)
			assert.Empty(t, small.Warnings)
		})
	}
}

func TestCompileErrorsNameLineAndColumnAndKeepTheLastGoodVersion(t *testing.T) {
	ctx := context.Background()
	e, err := NewEngine()
	require.NoError(t, err)
	require.NoError(t, e.Upsert(ctx, policy("limits", novacronv1.EnforcementDeny, maxCPU8)))

	broken := policy("limits", novacronv1.EnforcementDeny, "package team.limits\n\ndeny contains msg if {\n  input.x ==\n}\n")
	broken.Generation = 2
	err = e.Upsert(ctx, broken)
	var ce *CompileError
	require.ErrorAs(t, err, &ce)
	assert.Contains(t, ce.Error(), "policy limits does not compile: line 5, column 1")
	assert.Equal(t, map[string]int64{"limits": 1}, e.Policies(), "the last good version stays in force")
	res, err := e.Admit(ctx, vmInput(16, nil))
	require.NoError(t, err)
	assert.Len(t, res.Denials, 1)

	unsafe := policy("unsafe", novacronv1.EnforcementDeny, "package x\ndeny contains msg if { msg := y }\n")
	err = e.Upsert(ctx, unsafe)
	require.ErrorAs(t, err, &ce)
	assert.Contains(t, ce.Error(), "line 2, column")
	assert.Contains(t, ce.Error(), "var y is unsafe")

	norules := policy("empty", novacronv1.EnforcementDeny, "package x\nallow := true\n")
	assert.ErrorContains(t, e.Upsert(ctx, norules), "decision point admission reads the rules deny or warn, and the policy defines none of them")

	lib := policy("sneaky", novacronv1.EnforcementDeny, "package novacron.lib\ndeny contains 1 if false\n")
	assert.ErrorContains(t, e.Upsert(ctx, lib), "package novacron.lib is the built-in helper library")
}

func TestNamespaceSelector(t *testing.T) {
	ctx := context.Background()
	e, err := NewEngine()
	require.NoError(t, err)
	p := policy("limits", novacronv1.EnforcementDeny, maxCPU8)
	p.Spec.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "dev"}}
	require.NoError(t, e.Upsert(ctx, p))
	res, err := e.Admit(ctx, vmInput(16, map[string]string{"tier": "prod"}))
	require.NoError(t, err)
	assert.Empty(t, res.Denials)
	res, err = e.Admit(ctx, vmInput(16, map[string]string{"tier": "dev"}))
	require.NoError(t, err)
	assert.Len(t, res.Denials, 1)
	e.Remove("limits")
	res, err = e.Admit(ctx, vmInput(16, map[string]string{"tier": "dev"}))
	require.NoError(t, err)
	assert.Empty(t, res.Denials)
}

// Every built-in policy compiles as the VirtualMachinePolicy it ships as.
func TestBuiltinPoliciesCompile(t *testing.T) {
	ctx := context.Background()
	e, err := NewEngine()
	require.NoError(t, err)
	builtins, err := Builtins()
	require.NoError(t, err)
	require.Len(t, builtins, 6)
	for _, p := range builtins {
		require.NoError(t, e.Upsert(ctx, p), p.Name)
	}
}

func TestPlacementAndMigrationDecisions(t *testing.T) {
	ctx := context.Background()
	e, err := NewEngine()
	require.NoError(t, err)
	zones := &novacronv1.VirtualMachinePolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "gpu-zones"},
		Spec: novacronv1.VirtualMachinePolicySpec{Enforcement: novacronv1.EnforcementDeny,
			DecisionPoints: []novacronv1.DecisionPoint{novacronv1.DecisionPlacement, novacronv1.DecisionMigration},
			Rego: `package zones
deny_node[n.name] := "GPU VMs run in zone a only" if {
	some n in input.nodes
	n.labels.zone != "a"
}
node_score[n.name] := 10 if {
	some n in input.nodes
	n.labels.ssd == "true"
}
deny_migration contains "GPU VMs do not move" if input.vm.spec.template.spec.devices
`}}
	require.NoError(t, e.Upsert(ctx, zones))
	res, err := e.Place(ctx, PlacementInput{Nodes: []NodeInput{
		{Name: "n1", Labels: map[string]string{"zone": "a", "ssd": "true"}},
		{Name: "n2", Labels: map[string]string{"zone": "b"}},
	}})
	require.NoError(t, err)
	assert.Equal(t, map[string][]string{"n2": {"policy gpu-zones: GPU VMs run in zone a only"}}, res.Denied)
	assert.Equal(t, map[string]int64{"n1": 10}, res.Scores)

	denials, _, err := e.AllowMigration(ctx, MigrationInput{VM: map[string]any{"spec": map[string]any{"template": map[string]any{"spec": map[string]any{"devices": []any{map[string]any{"type": "gpu"}}}}}}})
	require.NoError(t, err)
	assert.Equal(t, []string{"policy gpu-zones: GPU VMs do not move"}, denials)
	denials, _, err = e.AllowMigration(ctx, MigrationInput{VM: map[string]any{"spec": map[string]any{}}})
	require.NoError(t, err)
	assert.Empty(t, denials)
}

// A policy sees only its input: the builtins that reach the network or the
// process do not compile.
func TestPoliciesCannotReachOutside(t *testing.T) {
	ctx := context.Background()
	e, err := NewEngine()
	require.NoError(t, err)
	for _, call := range []string{`http.send({"method": "get", "url": "http://169.254.169.254/"})`, `net.lookup_ip_addr("kubernetes.default")`, `opa.runtime()`} {
		err := e.Upsert(ctx, policy("exfil", novacronv1.EnforcementDeny, "package exfil\ndeny contains x if { x := "+call+" }\n"))
		var ce *CompileError
		require.ErrorAs(t, err, &ce, call)
		assert.Contains(t, ce.Error(), "undefined function", call)
	}
	assert.Empty(t, e.Policies())
}

// A builtin's failure is the evaluation's, which refuses the request, not an
// undefined value that lets a deny rule pass; so is a policy that runs too long.
func TestBuiltinErrorsAndSlowPoliciesFailClosed(t *testing.T) {
	ctx := context.Background()
	e, err := NewEngine()
	require.NoError(t, err)
	require.NoError(t, e.Upsert(ctx, policy("parse", novacronv1.EnforcementDeny, `package parse
import data.novacron.lib
deny contains "too big" if lib.memory_bytes(lib.vm_spec.resources.memory) > 1024
`)))
	in := vmInput(2, nil)
	in.Object.(map[string]any)["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["resources"].(map[string]any)["memory"] = "1099511627776000001u"
	_, err = e.Admit(ctx, in)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "policy parse: ")
	assert.Contains(t, err.Error(), "units.parse_bytes")

	e.Remove("parse")
	require.NoError(t, e.Upsert(ctx, policy("slow", novacronv1.EnforcementDeny, `package slow
deny contains "never" if {
	some i in numbers.range(1, 100000)
	some j in numbers.range(1, 100000)
	i * j == -1
}
`)))
	_, err = e.Admit(ctx, vmInput(2, nil))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "policy slow: evaluation took longer than 250ms")
}

// Policies compare bytes, also where Rego misreads the quantity.
func TestQuantitiesAreAlsoGivenInBytes(t *testing.T) {
	ctx := context.Background()
	e, err := NewEngine()
	require.NoError(t, err)
	require.NoError(t, e.Upsert(ctx, policy("bytes", novacronv1.EnforcementDeny, `package bytes
import data.novacron.lib
deny contains sprintf("%d bytes", [lib.vm_spec.resources.memoryBytes]) if lib.vm_spec.resources.memoryBytes > 256 * 1073741824
`)))
	in := vmInput(2, nil)
	in.Object.(map[string]any)["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["resources"].(map[string]any)["memory"] = "1099511627776000001u"
	res, err := e.Admit(ctx, in)
	require.NoError(t, err)
	require.Len(t, res.Denials, 1)
	assert.Equal(t, "1099511627777 bytes", res.Denials[0].Message)
}

// A deny policy that never compiled (made while the webhook was off, or by an
// older operator whose Rego this one refuses) fails closed at its decision
// points and in its namespaces; a dryrun one denies nothing; a later good
// version, or deleting it, ends that.
func TestAPolicyThatNeverCompiledFailsClosed(t *testing.T) {
	ctx := context.Background()
	e, err := NewEngine()
	require.NoError(t, err)
	unsafe := `package x
deny contains "no" if http.send({"method": "get", "url": "http://example.com"})
`
	broken := policy("broken", novacronv1.EnforcementDeny, unsafe)
	broken.Spec.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "prod"}}
	broken.Spec.DecisionPoints = append(broken.Spec.DecisionPoints, novacronv1.DecisionPlacement)
	require.Error(t, e.Upsert(ctx, broken))
	assert.Empty(t, e.Policies(), "not a policy in force")

	_, err = e.Admit(ctx, vmInput(1, map[string]string{"tier": "prod"}))
	assert.ErrorContains(t, err, "policy broken")
	assert.ErrorContains(t, err, "never compiled")
	_, err = e.Admit(ctx, vmInput(1, map[string]string{"tier": "dev"}))
	assert.NoError(t, err, "only in the namespaces it covers")
	assert.True(t, e.Serves(novacronv1.DecisionPlacement))
	_, err = e.Place(ctx, PlacementInput{Namespace: Namespace{Labels: map[string]string{"tier": "prod"}}, Nodes: []NodeInput{{Name: "n1"}}})
	assert.ErrorContains(t, err, "policy broken", "no node is chosen past it")
	_, _, err = e.AllowMigration(ctx, MigrationInput{})
	assert.NoError(t, err, "it does not serve migration")

	fixed := policy("broken", novacronv1.EnforcementDeny, maxCPU8)
	fixed.Spec.NamespaceSelector = broken.Spec.NamespaceSelector
	require.NoError(t, e.Upsert(ctx, fixed))
	_, err = e.Admit(ctx, vmInput(1, map[string]string{"tier": "prod"}))
	assert.NoError(t, err)
	require.Error(t, e.Upsert(ctx, broken))
	_, err = e.Admit(ctx, vmInput(1, map[string]string{"tier": "prod"}))
	assert.NoError(t, err, "a good version stays in force over a broken edit")

	require.Error(t, e.Upsert(ctx, policy("dry", novacronv1.EnforcementDryRun, unsafe)))
	e.Remove("broken")
	_, err = e.Admit(ctx, vmInput(1, map[string]string{"tier": "prod"}))
	assert.NoError(t, err, "a broken dryrun policy denies nothing; a deleted one is gone")
}
