package security

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/test/testenv"
)

// tenant makes a namespace for user, who gets novacron-edit there and
// nothing else, as README's security section says to bind it; VMs left at
// the end are deleted.
func tenant(t *testing.T, ns, user string) client.Client {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	t.Cleanup(func() {
		var vms novacronv1.VirtualMachineList
		_ = env.Client.List(ctx, &vms, client.InNamespace(ns))
		for _, v := range vms.Items {
			env.DeleteVMAndWait(t, client.ObjectKeyFromObject(&v), timeout)
		}
	})
	bind(t, ns, user, rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "novacron-edit"})
	return as(t, user)
}

// grant gives user more rights in ns, as a namespace's built-in edit role
// would (envtest has no aggregation controller to fill that one in).
func grant(t *testing.T, ns, user string, rules ...rbacv1.PolicyRule) {
	t.Helper()
	name := user + "-extra"
	require.NoError(t, env.Client.Create(context.Background(), &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Rules: rules}))
	bind(t, ns, user, rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name})
}

func bind(t *testing.T, ns, user string, role rbacv1.RoleRef) {
	t.Helper()
	require.NoError(t, env.Client.Create(context.Background(), &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%s", user, strings.ToLower(role.Name)), Namespace: ns},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
		RoleRef:    role,
	}))
}

// podRights are what Kubernetes' edit role gives on pods and jobs.
var podRights = []rbacv1.PolicyRule{
	{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete"}},
	{APIGroups: []string{"batch"}, Resources: []string{"jobs"}, Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete"}},
}

// newVM is a small VM, a tenant's to tweak.
func newVM(ns, name string) *novacronv1.VirtualMachine {
	return testenv.NewVM(ns, name, 1, "1Gi")
}

func gpuVM(ns, name string) *novacronv1.VirtualMachine {
	v := testenv.NewVM(ns, name, 1, "1Gi")
	v.Spec.Template.Spec.Devices = []novacronv1.Device{{Type: novacronv1.DeviceTypeGPU, Vendor: "nvidia", Model: "tesla-t4", Count: 1}}
	return v
}

// refused requires that err is the API server's refusal naming field, and
// returns its message.
func refused(t *testing.T, err error, field string) string {
	t.Helper()
	require.Error(t, err)
	require.True(t, apierrors.IsInvalid(err) || apierrors.IsForbidden(err), "a refusal, not %v", err)
	require.Contains(t, err.Error(), field)
	return err.Error()
}

func running(t *testing.T, v *novacronv1.VirtualMachine) *novacronv1.VirtualMachine {
	t.Helper()
	return env.WaitVM(t, client.ObjectKeyFromObject(v), timeout, "phase Running", testenv.PhaseIs(novacronv1.VMRunning))
}
