package migration

import (
	"fmt"
	"time"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

// Limits bound the migrations under way at once. A migration counts once it
// is past Pending and until it is done.
type Limits struct {
	// MaxParallel bounds migrations in the cluster.
	MaxParallel int
	// MaxOutbound bounds migrations leaving one node.
	MaxOutbound int
	// MaxPerNamespace bounds the migrations tenants asked for (Manual) in one
	// namespace, so one tenant cannot take every slot.
	MaxPerNamespace int
	// ReservedForDrain of the MaxParallel slots only drains may take, so a
	// node can be emptied however many migrations tenants ask for.
	ReservedForDrain int
	// SchedulingTimeout bounds how long a migration holds its slot waiting
	// for a target node; then it fails and gives the slot back.
	SchedulingTimeout time.Duration
}

// WithDefaults fills unset limits: 4 in the cluster, 1 of them kept for
// drains (a negative ReservedForDrain: none), 2 leaving a node, 2 per
// namespace, 5 minutes to find a target.
func (l Limits) WithDefaults() Limits {
	if l.MaxParallel <= 0 {
		l.MaxParallel = 4
	}
	if l.MaxOutbound <= 0 {
		l.MaxOutbound = 2
	}
	if l.MaxPerNamespace <= 0 {
		l.MaxPerNamespace = 2
	}
	if l.ReservedForDrain == 0 {
		l.ReservedForDrain = 1 // negative: none
	}
	if l.SchedulingTimeout <= 0 {
		l.SchedulingTimeout = 5 * time.Minute
	}
	return l
}

// OverLimits says why migration m, leaving node source, must wait for the
// others under way, or "".
func OverLimits(all []novacronv1.VirtualMachineMigration, m *novacronv1.VirtualMachineMigration, source string, l Limits) string {
	active, outbound, namespace := 0, 0, 0
	for _, o := range all {
		if o.UID == m.UID || o.Status.Phase == "" || o.Status.Phase == novacronv1.MigrationPending || o.Status.Phase.Done() {
			continue
		}
		active++
		if o.Status.SourceNode == source {
			outbound++
		}
		if o.Namespace == m.Namespace && !IsSystem(o.Spec.Reason) {
			namespace++
		}
	}
	slots := l.MaxParallel
	if m.Spec.Reason != novacronv1.MigrationDrain {
		// Others keep at least one slot.
		slots -= min(max(l.ReservedForDrain, 0), l.MaxParallel-1)
	}
	switch {
	case active >= l.MaxParallel:
		return fmt.Sprintf("%d migrations are under way, the cluster's limit", active)
	case active >= slots:
		return fmt.Sprintf("%d migrations are under way; the other %d slots are kept for drains", active, l.MaxParallel-slots)
	case outbound >= l.MaxOutbound:
		return fmt.Sprintf("%d migrations are leaving node %s, its limit", outbound, source)
	case !IsSystem(m.Spec.Reason) && namespace >= l.MaxPerNamespace:
		return fmt.Sprintf("%d migrations asked for in namespace %s are under way, its limit", namespace, m.Namespace)
	}
	return ""
}

// IsSystem says whether reason is one only the operator asks for (a drain or
// the rebalancer), rather than a user.
func IsSystem(reason novacronv1.MigrationReason) bool {
	return reason == novacronv1.MigrationDrain || reason == novacronv1.MigrationRebalance
}

// Timeout bounds a live migration of a guest with memoryBytes of memory:
// perGiB of it per GiB, at least minimum.
func Timeout(memoryBytes int64, perGiB, minimum time.Duration) time.Duration {
	return max(minimum, time.Duration(float64(perGiB)*float64(memoryBytes)/float64(1<<30)))
}
