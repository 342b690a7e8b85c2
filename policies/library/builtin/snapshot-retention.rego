# novacron:description Scheduled snapshots keep at most 30 copies.
# novacron:decisionPoints admission
# novacron:enforcement deny
package novacron.builtin.snapshot_retention

import data.novacron.lib

max_retention := 30

deny contains {"msg": msg, "field": "spec.snapshotPolicy.retention"} if {
	lib.is_vm
	r := input.object.spec.snapshotPolicy.retention
	r > max_retention
	msg := sprintf("snapshot retention %d is above the limit of %d", [r, max_retention])
}
