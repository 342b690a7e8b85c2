// Package integration holds tests that run against a real kube-apiserver and
// etcd (envtest) with NovaCron's CRDs installed.
package integration

import (
	"fmt"
	"os"
	"testing"

	"github.com/novacron/operator/test/testenv"
)

// env is shared by the package's tests: starting an API server takes seconds.
var env *testenv.Env

func TestMain(m *testing.M) {
	var err error
	env, err = testenv.Start(testenv.WithTestCRDs())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if err := env.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping envtest:", err)
	}
	os.Exit(code)
}
