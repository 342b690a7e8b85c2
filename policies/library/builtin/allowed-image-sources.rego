# novacron:description Images come from the platform's catalog (marketplace://) or over HTTPS.
# novacron:decisionPoints admission
# novacron:enforcement deny
package novacron.builtin.allowed_image_sources

import data.novacron.lib

allowed_prefixes := ["marketplace://", "https://"]

deny contains {"msg": msg, "field": "spec.template.spec.image.source"} if {
	src := lib.vm_spec.image.source
	not any_prefix(src)
	msg := sprintf("image source %q is not allowed; use one of %v", [src, allowed_prefixes])
}

any_prefix(src) if {
	some p in allowed_prefixes
	startswith(src, p)
}
