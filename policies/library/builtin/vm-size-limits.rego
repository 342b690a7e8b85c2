# novacron:description VMs may have at most 64 vCPUs and 256Gi of memory.
# novacron:decisionPoints admission
# novacron:enforcement deny
package novacron.builtin.vm_size_limits

import data.novacron.lib

max_cpu := 64

max_memory := "256Gi"

deny contains {"msg": msg, "field": "spec.template.spec.resources.cpu"} if {
	lib.vm_spec.resources.cpu > max_cpu
	msg := sprintf("%d vCPUs is above the limit of %d; ask for fewer", [lib.vm_spec.resources.cpu, max_cpu])
}

deny contains {"msg": msg, "field": "spec.template.spec.resources.memory"} if {
	lib.vm_spec.resources.memoryBytes > lib.memory_bytes(max_memory)
	msg := sprintf("memory %v is above the limit of %s; ask for less", [lib.vm_spec.resources.memory, max_memory])
}
