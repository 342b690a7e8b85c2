# Helpers for NovaCron policies: import data.novacron.lib.
package novacron.lib

# is_vm is true when the request is about a VirtualMachine.
is_vm if input.kind == "VirtualMachine"

# vm_spec is the machine part of a VirtualMachine (spec.template.spec).
vm_spec := input.object.spec.template.spec if is_vm

# memory_bytes turns a Kubernetes quantity such as "4Gi" or "512M" into bytes.
memory_bytes(q) := units.parse_bytes(q) if is_string(q)

memory_bytes(q) := q if is_number(q)

# gpu_count is the number of GPUs a VM asks for.
gpu_count := sum([object.get(d, "count", 1) | some d in object.get(vm_spec, "devices", []); d.type == "gpu"])

# namespace_label is a label of the object's namespace, or "" when unset.
namespace_label(key) := object.get(object.get(input.namespace, "labels", {}), key, "")
