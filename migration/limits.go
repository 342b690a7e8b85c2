package migration

import (
	"fmt"
	"time"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

// OverLimits says why migration m, leaving node source, must wait for the
// others under way, or "": at most maxParallel migrations run in the
// cluster and maxOutbound leave one node. A migration counts once it is
// past Pending and until it is done.
func OverLimits(all []novacronv1.VirtualMachineMigration, m *novacronv1.VirtualMachineMigration, source string, maxParallel, maxOutbound int) string {
	active, outbound := 0, 0
	for _, o := range all {
		if o.UID == m.UID || o.Status.Phase == "" || o.Status.Phase == novacronv1.MigrationPending || o.Status.Phase.Done() {
			continue
		}
		active++
		if o.Status.SourceNode == source {
			outbound++
		}
	}
	switch {
	case active >= maxParallel:
		return fmt.Sprintf("%d migrations are under way, the cluster's limit", active)
	case outbound >= maxOutbound:
		return fmt.Sprintf("%d migrations are leaving node %s, its limit", outbound, source)
	}
	return ""
}

// Timeout bounds a live migration of a guest with memoryBytes of memory:
// perGiB of it per GiB, at least minimum.
func Timeout(memoryBytes int64, perGiB, minimum time.Duration) time.Duration {
	return max(minimum, time.Duration(float64(perGiB)*float64(memoryBytes)/float64(1<<30)))
}
