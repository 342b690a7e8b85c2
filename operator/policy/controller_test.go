package policy

import (
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/fakecluster"
	"github.com/novacron/operator/policies"
)

// After a start the operator is not ready, so its webhooks get no requests,
// until every policy is loaded: else they would admit with no policy in force.
func TestTheOperatorIsReadyOncePoliciesAreLoaded(t *testing.T) {
	deny := &novacronv1.VirtualMachinePolicy{ObjectMeta: metav1.ObjectMeta{Name: "limits", Generation: 1},
		Spec: novacronv1.VirtualMachinePolicySpec{DecisionPoints: []novacronv1.DecisionPoint{novacronv1.DecisionAdmission},
			Rego: "package limits\ndeny contains \"no\" if false\n"}}
	broken := &novacronv1.VirtualMachinePolicy{ObjectMeta: metav1.ObjectMeta{Name: "broken", Generation: 1},
		Spec: novacronv1.VirtualMachinePolicySpec{DecisionPoints: []novacronv1.DecisionPoint{novacronv1.DecisionAdmission},
			Rego: "package broken\ndeny contains x if {\n"}}
	c := fakecluster.New(t, deny, broken)
	engine, err := policies.NewEngine()
	require.NoError(t, err)
	r := &Reconciler{Client: c.Client, Engine: engine, Recorder: c.Events}
	ready := func() error { return r.Synced(httptest.NewRequest("GET", "/readyz", nil)) }

	require.Error(t, ready())
	fakecluster.Reconcile(t, r, "", "limits")
	err = ready()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "policy broken is not loaded yet")
	fakecluster.Reconcile(t, r, "", "broken") // looked at, though it does not compile
	require.NoError(t, ready())

	// Ready stays ready: an edit takes effect in moments, without the
	// operator leaving its Service meanwhile.
	require.NoError(t, c.Client.Get(t.Context(), client.ObjectKeyFromObject(deny), deny))
	deny.Spec.Rego += "warn contains \"big\" if false\n"
	deny.Generation = 2
	require.NoError(t, c.Client.Update(t.Context(), deny))
	assert.NoError(t, ready())
}
