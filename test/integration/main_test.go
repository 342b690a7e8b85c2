// Package integration holds tests that run against a real kube-apiserver and
// etcd (envtest) with NovaCron's CRDs installed.
package integration

import (
	"os"
	"testing"

	"github.com/novacron/operator/test/testenv"
)

// env is shared by the package's tests: starting an API server takes seconds.
var env *testenv.Env

func TestMain(m *testing.M) {
	os.Exit(testenv.Main(m, func(s *testenv.Suite) error { env = s.Env; return nil }, testenv.WithTestCRDs()))
}
