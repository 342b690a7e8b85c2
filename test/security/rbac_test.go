package security

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authorizationv1 "k8s.io/api/authorization/v1"
)

// Finding 14: the operator's shipped RBAC grants what it uses and no more:
// its own namespace's ConfigMaps and Leases through a Role, no pod updates.
func TestTheOperatorsRoleIsNoWiderThanItsWork(t *testing.T) {
	ctx := context.Background()
	for _, f := range []string{"operator/namespace.yaml", "rbac/role.yaml", "operator/rbac.yaml"} {
		_, err := env.Kubectl(ctx, "apply", "-f", filepath.Join(env.RepoRoot, "manifests", f))
		require.NoError(t, err, f)
	}
	operator := "system:serviceaccount:novacron-system:novacron-controller-manager"
	may := func(verb, group, resource, ns string) bool {
		t.Helper()
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: operator,
			Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:novacron-system", "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: verb, Group: group, Resource: resource, Namespace: ns}}}
		require.NoError(t, env.Client.Create(ctx, sar))
		return sar.Status.Allowed
	}
	for _, c := range []struct {
		verb, group, resource, ns string
		allowed                   bool
	}{
		{"get", "", "configmaps", "novacron-system", true},
		{"patch", "", "configmaps", "novacron-system", true},
		{"get", "", "configmaps", "tenant-a", false},
		{"list", "", "configmaps", "", false},
		{"update", "coordination.k8s.io", "leases", "novacron-system", true},
		{"create", "coordination.k8s.io", "leases", "kube-system", false},
		{"create", "", "pods", "tenant-a", true},
		{"patch", "", "pods", "tenant-a", true},
		{"update", "", "pods", "tenant-a", false},
		{"list", "", "secrets", "tenant-a", false},
		{"create", "authentication.k8s.io", "selfsubjectreviews", "", true},
		{"create", "authorization.k8s.io", "subjectaccessreviews", "", true},
	} {
		assert.Equal(t, c.allowed, may(c.verb, c.group, c.resource, c.ns), "%s %s/%s in %q", c.verb, c.group, c.resource, c.ns)
	}
}
