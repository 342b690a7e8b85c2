package webhook

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/policies"
)

func as(user string) context.Context {
	return admission.NewContextWithRequest(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UserInfo: authenticationv1.UserInfo{Username: user}}})
}

// A migration a user asks for passes the admission policies (which see its
// kind) as well as the migration policies; the operator's own skips the
// admission ones, which are for users' requests.
func TestMigrationsPassTheAdmissionPoliciesUnlessTheOperatorAsks(t *testing.T) {
	scheme := runtime.NewScheme()
	require.NoError(t, novacronv1.AddToScheme(scheme))
	vm := &novacronv1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "team"}}
	vm.Spec.MigrationPolicy = &novacronv1.MigrationPolicy{AllowLiveMigration: true}
	vm.Status = novacronv1.VirtualMachineStatus{Phase: novacronv1.VMRunning, NodeName: "node-1"}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(vm).WithStatusSubresource(vm).Build()
	engine, err := policies.NewEngine()
	require.NoError(t, err)
	require.NoError(t, engine.Upsert(context.Background(), &novacronv1.VirtualMachinePolicy{ObjectMeta: metav1.ObjectMeta{Name: "no-moves"},
		Spec: novacronv1.VirtualMachinePolicySpec{DecisionPoints: []novacronv1.DecisionPoint{novacronv1.DecisionAdmission}, Rego: `package moves
deny contains {"msg": "no moves today", "field": "spec.vmName"} if input.kind == "VirtualMachineMigration"
`}}))
	v := &MigrationValidator{Client: c, Policies: PolicyGate{Reader: c, Engine: engine, Operator: "system:serviceaccount:novacron-system:novacron-operator"}}
	m := &novacronv1.VirtualMachineMigration{ObjectMeta: metav1.ObjectMeta{Name: "move", Namespace: "team"},
		Spec: novacronv1.VirtualMachineMigrationSpec{VMName: "web", Reason: novacronv1.MigrationManual}}
	_, err = v.ValidateCreate(as("alice"), m)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "spec.vmName: Forbidden: policy no-moves: no moves today")

	m.Spec.Reason = novacronv1.MigrationDrain
	_, err = v.ValidateCreate(as("system:serviceaccount:novacron-system:novacron-operator"), m)
	assert.NoError(t, err, "the operator's drain")
}

// A VM's scheduled snapshots are made by the operator for the VM's owner
// (spec.snapshotPolicy): admission policies judge them as the owner's own.
func TestScheduledSnapshotsAreJudgedThoughTheOperatorMakesThem(t *testing.T) {
	scheme := runtime.NewScheme()
	require.NoError(t, novacronv1.AddToScheme(scheme))
	vm := &novacronv1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "team"}}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(vm).Build()
	engine, err := policies.NewEngine()
	require.NoError(t, err)
	require.NoError(t, engine.Upsert(context.Background(), &novacronv1.VirtualMachinePolicy{ObjectMeta: metav1.ObjectMeta{Name: "no-snapshots"},
		Spec: novacronv1.VirtualMachinePolicySpec{DecisionPoints: []novacronv1.DecisionPoint{novacronv1.DecisionAdmission}, Rego: `package snaps
deny contains "no snapshots here" if input.kind == "VirtualMachineSnapshot"
`}}))
	const operator = "system:serviceaccount:novacron-system:novacron-operator"
	v := &SnapshotValidator{Client: c, Policies: PolicyGate{Reader: c, Engine: engine, Operator: operator}}
	s := &novacronv1.VirtualMachineSnapshot{ObjectMeta: metav1.ObjectMeta{Name: "web-0200", Namespace: "team",
		Labels: map[string]string{novacronv1.LabelSnapshotScheduled: "true"}}, Spec: novacronv1.VirtualMachineSnapshotSpec{VMName: "web"}}
	_, err = v.ValidateCreate(as(operator), s)
	assert.ErrorContains(t, err, "policy no-snapshots: no snapshots here")
	delete(s.Labels, novacronv1.LabelSnapshotScheduled)
	_, err = v.ValidateCreate(as(operator), s)
	assert.NoError(t, err, "one the operator makes on its own account")
}
