package policies

import "encoding/json"

// jsonRoundTrip turns typed Go values (API objects) into plain maps and slices,
// the shape Rego sees after JSON decoding.
func jsonRoundTrip(in any) (any, error) {
	b, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	var out any
	err = json.Unmarshal(b, &out)
	return out, err
}
