// Package nodeagent tests novacron-node's publishing against a real API
// server: a node's devices, discovered from a sysfs tree, become its
// Hypervisor's device inventory (server-side applied beside the operator's
// fields), its DRA ResourceSlice and its heartbeat Lease.
package nodeagent

import (
	"os"
	"testing"

	"github.com/novacron/operator/test/testenv"
)

var suite *testenv.Suite

func TestMain(m *testing.M) {
	os.Exit(testenv.Main(m, func(s *testenv.Suite) error { suite = s; return nil }))
}
