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
	m.UID = types.UID(uid)
	m.Status.Phase, m.Status.SourceNode = phase, source
	return m
}

func TestOverLimitsCountsOnlyMigrationsUnderWay(t *testing.T) {
	me := mig("me", novacronv1.MigrationPending, "")
	all := []novacronv1.VirtualMachineMigration{
		me,
		mig("a", novacronv1.MigrationRunning, "node-1"),
		mig("b", novacronv1.MigrationScheduling, "node-2"),
		mig("waiting", novacronv1.MigrationPending, "node-1"),
		mig("done", novacronv1.MigrationSucceeded, "node-1"),
		mig("new", "", "node-1"),
	}
	assert.Empty(t, OverLimits(all, &me, "node-1", 4, 2))
	assert.Equal(t, "1 migrations are leaving node node-1, its limit", OverLimits(all, &me, "node-1", 4, 1))
	assert.Equal(t, "2 migrations are under way, the cluster's limit", OverLimits(all, &me, "node-3", 2, 2))
	assert.Empty(t, OverLimits(all[:2], &all[1], "node-1", 1, 1), "a migration does not wait for itself")
}

func TestTimeoutGrowsWithMemory(t *testing.T) {
	assert.Equal(t, 2*time.Minute, Timeout(1<<30, time.Minute, 2*time.Minute), "at least the minimum")
	assert.Equal(t, 16*time.Minute, Timeout(16<<30, time.Minute, 2*time.Minute))
}
