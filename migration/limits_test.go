package migration

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"k8s.io/apimachinery/pkg/types"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

func mig(uid string, phase novacronv1.MigrationPhase, source string) novacronv1.VirtualMachineMigration {
	m := novacronv1.VirtualMachineMigration{}
	m.UID, m.Namespace = types.UID(uid), "team"
	m.Status.Phase, m.Status.SourceNode = phase, source
	return m
}

func TestOverLimitsCountsOnlyMigrationsUnderWay(t *testing.T) {
	me := mig("me", novacronv1.MigrationPending, "")
	me.Spec.Reason = novacronv1.MigrationDrain
	all := []novacronv1.VirtualMachineMigration{
		me,
		mig("a", novacronv1.MigrationRunning, "node-1"),
		mig("b", novacronv1.MigrationScheduling, "node-2"),
		mig("waiting", novacronv1.MigrationPending, "node-1"),
		mig("done", novacronv1.MigrationSucceeded, "node-1"),
		mig("new", "", "node-1"),
	}
	limits := func(parallel, outbound int) Limits {
		return Limits{MaxParallel: parallel, MaxOutbound: outbound, MaxPerNamespace: 10}.WithDefaults()
	}
	assert.Empty(t, OverLimits(all, &me, "node-1", limits(4, 2)))
	assert.Equal(t, "1 migrations are leaving node node-1, its limit", OverLimits(all, &me, "node-1", limits(4, 1)))
	assert.Equal(t, "2 migrations are under way, the cluster's limit", OverLimits(all, &me, "node-3", limits(2, 2)))
	assert.Empty(t, OverLimits(all[:2], &all[1], "node-1", limits(1, 1)), "a migration does not wait for itself")
}

// The last slots are kept for drains: a user's migration waits for them to
// be free, a drain's takes them.
func TestSlotsAreKeptForDrains(t *testing.T) {
	l := Limits{MaxParallel: 3, MaxPerNamespace: 10}.WithDefaults()
	other := mig("other", novacronv1.MigrationRunning, "node-2")
	other.Namespace = "other"
	running := []novacronv1.VirtualMachineMigration{mig("a", novacronv1.MigrationRunning, "node-1"), other}
	manual := mig("manual", novacronv1.MigrationPending, "")
	assert.Equal(t, "2 migrations are under way; the other 1 slots are kept for drains", OverLimits(running, &manual, "node-3", l))
	drain := mig("drain", novacronv1.MigrationPending, "")
	drain.Spec.Reason = novacronv1.MigrationDrain
	assert.Empty(t, OverLimits(running, &drain, "node-3", l))
	rebalance := mig("rebalance", novacronv1.MigrationPending, "")
	rebalance.Spec.Reason = novacronv1.MigrationRebalance
	assert.NotEmpty(t, OverLimits(running, &rebalance, "node-3", l), "only drains take the kept slots")

	none := Limits{MaxParallel: 3, MaxPerNamespace: 10, ReservedForDrain: -1}.WithDefaults()
	assert.Empty(t, OverLimits(running, &manual, "node-3", none))
	one := Limits{MaxParallel: 1, MaxPerNamespace: 10}.WithDefaults()
	assert.Empty(t, OverLimits(nil, &manual, "node-3", one), "with one slot, nothing is kept")
}

// One namespace cannot take every slot with migrations it asks for; the
// operator's own (drain, rebalance) in that namespace do not count.
func TestANamespaceHasItsShare(t *testing.T) {
	l := Limits{MaxParallel: 10, MaxPerNamespace: 2}.WithDefaults()
	drained := mig("drained", novacronv1.MigrationRunning, "node-9")
	drained.Spec.Reason = novacronv1.MigrationDrain
	elsewhere := mig("elsewhere", novacronv1.MigrationRunning, "node-8")
	elsewhere.Namespace = "other"
	all := []novacronv1.VirtualMachineMigration{mig("a", novacronv1.MigrationRunning, "node-1"), drained, elsewhere}
	third := mig("third", novacronv1.MigrationPending, "")
	assert.Empty(t, OverLimits(all, &third, "node-3", l))
	all = append(all, mig("b", novacronv1.MigrationScheduling, "node-2"))
	assert.Equal(t, "2 migrations asked for in namespace team are under way, its limit", OverLimits(all, &third, "node-3", l))
	drain := mig("drain", novacronv1.MigrationPending, "")
	drain.Spec.Reason = novacronv1.MigrationDrain
	assert.Empty(t, OverLimits(all, &drain, "node-3", l), "a drain is not the tenant's share")
}

func TestTimeoutGrowsWithMemory(t *testing.T) {
	assert.Equal(t, 2*time.Minute, Timeout(1<<30, time.Minute, 2*time.Minute), "at least the minimum")
	assert.Equal(t, 16*time.Minute, Timeout(16<<30, time.Minute, 2*time.Minute))
}
