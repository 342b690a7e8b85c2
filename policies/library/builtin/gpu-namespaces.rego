# novacron:description GPUs only in namespaces labelled novacron.io/gpu-allowed=true.
# novacron:decisionPoints admission
# novacron:enforcement warn
package novacron.builtin.gpu_namespaces

import data.novacron.lib

deny contains {"msg": msg, "field": "spec.template.spec.devices"} if {
	lib.gpu_count > 0
	lib.namespace_label("novacron.io/gpu-allowed") != "true"
	msg := sprintf("namespace %s may not use GPUs; a cluster admin labels it novacron.io/gpu-allowed=true to allow them", [input.namespace.name])
}
