package novacron.builtin.encrypted_migration_test

import data.novacron.builtin.encrypted_migration

vm(policy) := {"kind": "VirtualMachine", "object": {"spec": {"migrationPolicy": policy}}}

test_unencrypted_live_migration_denied if {
	count(encrypted_migration.deny) == 1 with input as vm({"allowLiveMigration": true})
}

test_encrypted_allowed if {
	count(encrypted_migration.deny) == 0 with input as vm({"allowLiveMigration": true, "encrypted": true})
}

test_no_live_migration_allowed if {
	count(encrypted_migration.deny) == 0 with input as vm({"allowLiveMigration": false})
}

test_migration_point if {
	count(encrypted_migration.deny_migration) == 1 with input as {"vm": {"spec": {"migrationPolicy": {"allowLiveMigration": true}}}}
	count(encrypted_migration.deny_migration) == 0 with input as {"vm": {"spec": {"migrationPolicy": {"encrypted": true}}}}
}
