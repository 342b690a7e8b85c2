package novacron.builtin.vm_size_limits_test

import data.novacron.builtin.vm_size_limits

# As the engine gives it: memoryBytes beside the quantity.
vm(cpu, mem) := {"kind": "VirtualMachine", "object": {"spec": {"template": {"spec": {"resources": {"cpu": cpu, "memory": mem, "memoryBytes": units.parse_bytes(mem)}}}}}}

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

# A quantity Rego's units.parse_bytes misreads is judged by its bytes.
test_memory_judged_in_bytes if {
	some v in vm_size_limits.deny with input as {"kind": "VirtualMachine", "object": {"spec": {"template": {"spec": {"resources": {"cpu": 2, "memory": "1099511627776000001u", "memoryBytes": 1099511627777}}}}}}
	v.field == "spec.template.spec.resources.memory"
}
