# novacron:description Live migration traffic must be encrypted.
# novacron:decisionPoints admission,migration
# novacron:enforcement warn
package novacron.builtin.encrypted_migration

import data.novacron.lib

deny contains {"msg": "VMs that allow live migration must set migrationPolicy.encrypted: true", "field": "spec.migrationPolicy.encrypted"} if {
	lib.is_vm
	input.object.spec.migrationPolicy.allowLiveMigration
	not input.object.spec.migrationPolicy.encrypted
}

# At the migration decision point, input.vm is the VM to move.
deny_migration contains "the VM's migration policy does not require encryption" if {
	not input.vm.spec.migrationPolicy.encrypted
}
