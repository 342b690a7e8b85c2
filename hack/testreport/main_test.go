package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const run = `{"Action":"start","Package":"m/a"}
{"Action":"run","Package":"m/a","Test":"TestOK"}
{"Action":"output","Package":"m/a","Test":"TestOK","Output":"=== RUN   TestOK\n"}
{"Action":"output","Package":"m/a","Test":"TestOK","Output":"--- PASS: TestOK (0.00s)\n"}
{"Action":"pass","Package":"m/a","Test":"TestOK"}
{"Action":"run","Package":"m/a","Test":"TestE2E"}
{"Action":"output","Package":"m/a","Test":"TestE2E","Output":"=== RUN   TestE2E\n"}
{"Action":"output","Package":"m/a","Test":"TestE2E","Output":"    e2e_test.go:206: end-to-end: run ` + "`make test-e2e`" + `\n"}
{"Action":"output","Package":"m/a","Test":"TestE2E","Output":"--- SKIP: TestE2E (0.00s)\n"}
{"Action":"skip","Package":"m/a","Test":"TestE2E"}
{"Action":"output","Package":"m/a","Output":"PASS\n"}
{"Action":"output","Package":"m/a","Output":"ok  \tm/a\t0.04s\n"}
{"Action":"pass","Package":"m/a"}
{"Action":"run","Package":"m/b","Test":"TestBroken"}
{"Action":"output","Package":"m/b","Test":"TestBroken","Output":"=== RUN   TestBroken\n"}
{"Action":"output","Package":"m/b","Test":"TestBroken","Output":"    b_test.go:9: want 2, got 3\n"}
{"Action":"output","Package":"m/b","Test":"TestBroken","Output":"--- FAIL: TestBroken (0.00s)\n"}
{"Action":"fail","Package":"m/b","Test":"TestBroken"}
{"Action":"output","Package":"m/b","Output":"operator log line from TestMain\n"}
{"Action":"output","Package":"m/b","Output":"FAIL\tm/b\t0.10s\n"}
{"Action":"fail","Package":"m/b"}
{"Action":"output","Package":"m/c","Output":"?   \tm/c\t[no test files]\n"}
{"Action":"skip","Package":"m/c"}
# m/d
{"ImportPath":"m/d","Action":"build-output","Output":"d.go:3: undefined: x\n"}
`

func TestTheReportIsGoTestsPlusTheSkips(t *testing.T) {
	var out strings.Builder
	skips, err := report(strings.NewReader(run), &out)
	require.NoError(t, err)
	assert.Equal(t, "ok  \tm/a\t0.04s\n"+
		"=== RUN   TestBroken\n    b_test.go:9: want 2, got 3\n--- FAIL: TestBroken (0.00s)\n"+
		"operator log line from TestMain\nFAIL\tm/b\t0.10s\n"+
		"?   \tm/c\t[no test files]\n"+
		"# m/d\nd.go:3: undefined: x\n", out.String(), "a passing package is one line; a failing one has its output")
	require.Len(t, skips, 1)
	assert.Equal(t, "TestE2E", skips[0].test)
	assert.Equal(t, "end-to-end: run `make test-e2e`", skips[0].why)
}
