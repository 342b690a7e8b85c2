package novacron.builtin.allowed_image_sources_test

import data.novacron.builtin.allowed_image_sources

vm(src) := {"kind": "VirtualMachine", "object": {"spec": {"template": {"spec": {"image": {"source": src}}}}}}

test_marketplace_allowed if {
	count(allowed_image_sources.deny) == 0 with input as vm("marketplace://ubuntu-22.04-lts")
}

test_https_allowed if {
	count(allowed_image_sources.deny) == 0 with input as vm("https://images.example.com/debian.qcow2")
}

test_plain_http_denied if {
	count(allowed_image_sources.deny) == 1 with input as vm("http://images.example.com/debian.qcow2")
}
