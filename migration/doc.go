// Package migration is NovaCron's pure migration engine: the rules that say
// whether a VM can move live (Blockers), when a migration must wait for
// others (OverLimits) and how long it may take (Timeout), where a drained
// node's VMs would go (EstimateTargets) and which VMs a rebalance round moves
// (Plan), all on one capacity model (Resources) that matches how
// novacron-scheduler counts a node. It reads what it is given and returns
// decisions: no API calls, no clock. The webhook, the migration, drain and
// rebalancer controllers (operator/livemigration) and the scheduler share it.
package migration
