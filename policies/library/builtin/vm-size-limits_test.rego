package novacron.builtin.vm_size_limits_test

import data.novacron.builtin.vm_size_limits

vm(cpu, mem) := {"kind": "VirtualMachine", "object": {"spec": {"template": {"spec": {"resources": {"cpu": cpu, "memory": mem}}}}}}

test_small_vm_allowed if {
	count(vm_size_limits.deny) == 0 with input as vm(2, "4Gi")
}

test_limits_are_inclusive if {
	count(vm_size_limits.deny) == 0 with input as vm(64, "256Gi")
}

test_too_many_cpus if {
	some v in vm_size_limits.deny with input as vm(65, "4Gi")
	v.field == "spec.template.spec.resources.cpu"
}

test_too_much_memory if {
	some v in vm_size_limits.deny with input as vm(2, "512Gi")
	v.field == "spec.template.spec.resources.memory"
}
