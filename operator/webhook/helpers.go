package webhook

import (
	"reflect"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// isNilObject tells a typed nil (no old object on CREATE) from an object.
func isNilObject(o any) bool {
	if o == nil {
		return true
	}
	v := reflect.ValueOf(o)
	return v.Kind() == reflect.Pointer && v.IsNil()
}

// fieldPath turns a policy's dotted field ("spec.template.spec.resources.cpu")
// into a field.Path.
func fieldPath(dotted string) *field.Path {
	parts := strings.Split(dotted, ".")
	p := field.NewPath(parts[0])
	for _, s := range parts[1:] {
		p = p.Child(s)
	}
	return p
}
