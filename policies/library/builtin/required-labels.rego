# novacron:description VMs carry an owner label, so someone can be asked about them.
# novacron:decisionPoints admission
# novacron:enforcement dryrun
package novacron.builtin.required_labels

import data.novacron.lib

required := ["owner"]

deny contains {"msg": msg, "field": "metadata.labels"} if {
	lib.is_vm
	input.operation != "DELETE"
	some key in required
	not input.object.metadata.labels[key]
	msg := sprintf("label %q is required on VirtualMachines", [key])
}
