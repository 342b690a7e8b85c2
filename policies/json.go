package policies

import (
	"encoding/json"

	"k8s.io/apimachinery/pkg/api/resource"
)

// jsonRoundTrip turns typed Go values (API objects) into plain maps and slices,
// the shape Rego sees after JSON decoding, with byte counts added (withBytes).
func jsonRoundTrip(in any) (any, error) {
	b, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	withBytes(out)
	return out, nil
}

// byteFields are the quantities of a VM's resources that policies also see
// as numbers of bytes: resources.memoryBytes beside resources.memory. Rego's
// units.parse_bytes reads Kubernetes quantities only partly ("m" is mega to
// it, "u" an error), so a policy comparing numbers judges what the operator
// will actually give the VM.
var byteFields = map[string]string{"memory": "memoryBytes", "disk": "diskBytes"}

// withBytes adds the byte counts to every "resources" object in v.
func withBytes(v any) {
	switch x := v.(type) {
	case map[string]any:
		if r, ok := x["resources"].(map[string]any); ok {
			for from, to := range byteFields {
				if s, ok := r[from].(string); ok {
					if q, err := resource.ParseQuantity(s); err == nil {
						r[to] = q.Value() // rounded up to a whole byte
					}
				}
			}
		}
		for _, e := range x {
			withBytes(e)
		}
	case []any:
		for _, e := range x {
			withBytes(e)
		}
	}
}
