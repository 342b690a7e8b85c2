package novacron.builtin.gpu_namespaces_test

import data.novacron.builtin.gpu_namespaces

gpu_vm(ns_labels) := {
	"kind": "VirtualMachine",
	"namespace": {"name": "ml", "labels": ns_labels},
	"object": {"spec": {"template": {"spec": {"devices": [{"type": "gpu", "vendor": "nvidia", "count": 2}]}}}},
}

test_unlabelled_namespace_denied if {
	count(gpu_namespaces.deny) == 1 with input as gpu_vm({})
}

test_labelled_namespace_allowed if {
	count(gpu_namespaces.deny) == 0 with input as gpu_vm({"novacron.io/gpu-allowed": "true"})
}

test_vm_without_gpu_allowed if {
	count(gpu_namespaces.deny) == 0 with input as {"kind": "VirtualMachine", "namespace": {"name": "web"}, "object": {"spec": {"template": {"spec": {}}}}}
}
