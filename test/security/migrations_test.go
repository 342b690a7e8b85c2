package security

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

// Finding 8: a tenant's migration cannot pass for the drain's or the
// rebalancer's (the rebalancer stands back while one of its own runs, and
// policies judge by reason), neither when made nor by an edit.
func TestATenantCannotClaimASystemMigrationReason(t *testing.T) {
	ctx := context.Background()
	mallory := tenant(t, "mallory-reason", "mallory")
	v := newVM("mallory-reason", "web")
	v.Spec.MigrationPolicy = &novacronv1.MigrationPolicy{AllowLiveMigration: true}
	require.NoError(t, mallory.Create(ctx, v))
	running(t, v)

	for _, reason := range []novacronv1.MigrationReason{novacronv1.MigrationDrain, novacronv1.MigrationRebalance} {
		m := &novacronv1.VirtualMachineMigration{ObjectMeta: metav1.ObjectMeta{Name: "move-" + strings.ToLower(string(reason)), Namespace: "mallory-reason"},
			Spec: novacronv1.VirtualMachineMigrationSpec{VMName: "web", Reason: reason}}
		msg := refused(t, mallory.Create(ctx, m), "spec.reason")
		assert.Contains(t, msg, "set by NovaCron's own drain and rebalancer only")
	}

	m := &novacronv1.VirtualMachineMigration{ObjectMeta: metav1.ObjectMeta{Name: "move", Namespace: "mallory-reason"},
		Spec: novacronv1.VirtualMachineMigrationSpec{VMName: "web", Reason: novacronv1.MigrationManual}}
	require.NoError(t, mallory.Create(ctx, m), "a Manual migration is the tenant's to ask for")
	err := mallory.Patch(ctx, m, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"reason":"Drain"}}`)))
	refused(t, err, "spec.reason")
}
