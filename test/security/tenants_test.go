package security

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
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

// Finding 12: a VM made under the name of an earlier tenant's VM whose domain
// and disks were left on the node (its finalizer forced off, as an admin
// clearing a stuck namespace might) gets neither: the domain of another UUID
// is refused, not adopted or started, and nothing of it is deleted.
func TestALaterVMOfTheSameNameGetsNothingOfTheEarlierTenants(t *testing.T) {
	ctx := context.Background()
	alice := tenant(t, "reused-ns", "alice")
	v := newVM("reused-ns", "web")
	require.NoError(t, alice.Create(ctx, v))
	first := running(t, v)
	node := first.Status.NodeName
	// The finalizer forced off: the VM goes, its domain and disk stay.
	first.Finalizers = nil
	require.NoError(t, env.Client.Update(ctx, first))
	require.NoError(t, env.Client.Delete(ctx, first))
	require.Eventually(t, func() bool {
		return apierrors.IsNotFound(env.Client.Get(ctx, client.ObjectKeyFromObject(first), &novacronv1.VirtualMachine{}))
	}, timeout, 50*time.Millisecond)
	// Its launcher pod goes as the garbage collector takes it (envtest runs none).
	require.NoError(t, env.Client.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "reused-ns", Name: first.Status.LauncherPod}}))

	later := newVM("reused-ns", "web")
	later.Spec.Template.Spec.NodeSelector = map[string]string{corev1.LabelHostname: node}
	require.NoError(t, alice.Create(ctx, later))
	got := env.WaitVM(t, client.ObjectKeyFromObject(later), timeout, "refused the earlier domain", func(v *novacronv1.VirtualMachine) bool {
		c := meta.FindStatusCondition(v.Status.Conditions, novacronv1.ConditionReady)
		return c != nil && c.Reason == novacronv1.ReasonDomainConflict
	})
	assert.NotEqual(t, first.UID, got.UID)
	assert.Contains(t, meta.FindStatusCondition(got.Status.Conditions, novacronv1.ConditionReady).Message, string(first.UID))
	assert.False(t, got.Status.DomainDefined, "not adopted")
	assert.NotEqual(t, novacronv1.VMRunning, got.Status.Phase)
}
