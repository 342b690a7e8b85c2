package security

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/provider"
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

// Finding 8: one tenant cannot take every migration slot. Mallory's two
// migrations that no node can take hold her namespace's share (and would
// give it back after the scheduling timeout); her third waits, and another
// tenant's migration still starts.
func TestATenantCannotTakeEveryMigrationSlot(t *testing.T) {
	ctx := context.Background()
	mallory := tenant(t, "mallory-share", "mallory")
	alice := tenant(t, "alice-share", "alice")
	// Spread over both nodes, so no node's own limit is what holds them.
	migrate := func(c client.Client, ns, name, node string) *novacronv1.VirtualMachineMigration {
		v := newVM(ns, name)
		v.Spec.Template.Spec.NodeSelector = map[string]string{corev1.LabelHostname: node}
		v.Spec.MigrationPolicy = &novacronv1.MigrationPolicy{AllowLiveMigration: true}
		require.NoError(t, c.Create(ctx, v))
		running(t, v)
		m := &novacronv1.VirtualMachineMigration{ObjectMeta: metav1.ObjectMeta{Name: "move-" + name, Namespace: ns},
			Spec: novacronv1.VirtualMachineMigrationSpec{VMName: name, NodeSelector: map[string]string{"example.com/nowhere": "true"}}}
		require.NoError(t, c.Create(ctx, m))
		t.Cleanup(func() { _ = env.Client.Delete(ctx, m) })
		return m
	}
	phase := func(m *novacronv1.VirtualMachineMigration) (novacronv1.MigrationPhase, string) {
		got := &novacronv1.VirtualMachineMigration{}
		require.NoError(t, env.Client.Get(ctx, client.ObjectKeyFromObject(m), got))
		c := meta.FindStatusCondition(got.Status.Conditions, novacronv1.ConditionReady)
		if c == nil {
			return got.Status.Phase, ""
		}
		return got.Status.Phase, c.Message
	}
	for name, node := range map[string]string{"a": "gpu-1", "b": "cpu-1"} {
		m := migrate(mallory, "mallory-share", name, node)
		require.Eventually(t, func() bool { p, _ := phase(m); return p == novacronv1.MigrationScheduling }, timeout, 50*time.Millisecond)
	}
	third := migrate(mallory, "mallory-share", "c", "cpu-1")
	require.Eventually(t, func() bool {
		p, msg := phase(third)
		return p == novacronv1.MigrationPending && strings.Contains(msg, "in namespace mallory-share are under way, its limit")
	}, timeout, 50*time.Millisecond)

	other := migrate(alice, "alice-share", "web", "gpu-1")
	require.Eventually(t, func() bool { p, _ := phase(other); return p == novacronv1.MigrationScheduling }, timeout, 50*time.Millisecond,
		"another tenant's migration starts while mallory's wait")
}

// Finding 9: a tenant who deletes a VM while it migrates leaves nothing
// running untracked: the migration is cancelled first, its target pod goes,
// and the VM's domain is removed from its node before the VM is gone.
func TestDeletingAVMMidMigrationLeavesNothingBehind(t *testing.T) {
	ctx := context.Background()
	mallory := tenant(t, "mallory-midmove", "mallory")
	v := newVM("mallory-midmove", "web")
	v.Spec.MigrationPolicy = &novacronv1.MigrationPolicy{AllowLiveMigration: true}
	require.NoError(t, mallory.Create(ctx, v))
	node := running(t, v).Status.NodeName
	m := &novacronv1.VirtualMachineMigration{ObjectMeta: metav1.ObjectMeta{Name: "move", Namespace: "mallory-midmove"},
		Spec: novacronv1.VirtualMachineMigrationSpec{VMName: "web", NodeSelector: map[string]string{"example.com/nowhere": "true"}}}
	require.NoError(t, mallory.Create(ctx, m))
	var target string
	require.Eventually(t, func() bool {
		got := &novacronv1.VirtualMachineMigration{}
		if env.Client.Get(ctx, client.ObjectKeyFromObject(m), got) != nil || got.Status.Phase != novacronv1.MigrationScheduling {
			return false
		}
		target = got.Status.TargetPod
		return target != ""
	}, timeout, 50*time.Millisecond)

	require.NoError(t, mallory.Delete(ctx, v))
	require.Eventually(t, func() bool {
		return apierrors.IsNotFound(env.Client.Get(ctx, client.ObjectKeyFromObject(v), &novacronv1.VirtualMachine{}))
	}, timeout, 50*time.Millisecond, "the VM goes")
	assert.True(t, apierrors.IsNotFound(env.Client.Get(ctx, client.ObjectKeyFromObject(m), &novacronv1.VirtualMachineMigration{})), "its migration was cancelled and deleted first")
	assert.True(t, apierrors.IsNotFound(env.Client.Get(ctx, client.ObjectKey{Namespace: "mallory-midmove", Name: target}, &corev1.Pod{})), "the target pod is gone")
	hv, err := defined.Connector.Hypervisor(ctx, nodeURIs[node])
	require.NoError(t, err)
	_, err = hv.State(ctx, "mallory-midmove_web")
	assert.ErrorIs(t, err, provider.ErrNotFound, "no domain left on its node")
}
