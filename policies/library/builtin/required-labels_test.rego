package novacron.builtin.required_labels_test

import data.novacron.builtin.required_labels

test_missing_owner if {
	count(required_labels.deny) == 1 with input as {"kind": "VirtualMachine", "operation": "CREATE", "object": {"metadata": {"name": "a"}}}
}

test_owner_present if {
	count(required_labels.deny) == 0 with input as {"kind": "VirtualMachine", "operation": "CREATE", "object": {"metadata": {"labels": {"owner": "team-a"}}}}
}
