package v1alpha1

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestReservedKeys(t *testing.T) {
	for key, want := range map[string]bool{
		"novacron.io/assigned-devices": true, "node.novacron.io/maintenance": true,
		"novacron.io": false, "example.com/novacron.io": false, "app": false, "notnovacron.io/x": false,
	} {
		assert.Equal(t, want, IsReserved(key), key)
	}
}
