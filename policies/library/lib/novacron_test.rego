package novacron.lib_test

import data.novacron.lib

test_memory_bytes if {
	lib.memory_bytes("4Gi") == 4294967296
	lib.memory_bytes("512Mi") == 536870912
	lib.memory_bytes(1024) == 1024
}

test_gpu_count if {
	lib.gpu_count == 3 with input as {"kind": "VirtualMachine", "object": {"spec": {"template": {"spec": {"devices": [{"type": "gpu", "count": 2}, {"type": "gpu"}]}}}}}
}
