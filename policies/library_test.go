package policies

import (
	"context"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The Rego tests of the helper library and built-in policies run with the Go
// tests, through OPA's own test runner.
func TestRegoLibrary(t *testing.T) {
	mods, err := parseEmbedded("library", true)
	require.NoError(t, err)
	ch, err := tester.NewRunner().SetCompiler(ast.NewCompiler()).Run(context.Background(), mods)
	require.NoError(t, err)
	n := 0
	for r := range ch {
		n++
		assert.False(t, r.Fail, "%s.%s failed", r.Package, r.Name)
		assert.NoError(t, r.Error, "%s.%s", r.Package, r.Name)
	}
	assert.GreaterOrEqual(t, n, 18, "every built-in policy has tests")
}
