package novacron.builtin.snapshot_retention_test

import data.novacron.builtin.snapshot_retention

vm(r) := {"kind": "VirtualMachine", "object": {"spec": {"snapshotPolicy": {"schedule": "0 2 * * *", "retention": r}}}}

test_seed_retention_allowed if {
	count(snapshot_retention.deny) == 0 with input as vm(7)
}

test_above_ceiling_denied if {
	count(snapshot_retention.deny) == 1 with input as vm(31)
}
