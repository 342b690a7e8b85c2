// Package lifecycle tests the VM controller end to end on envtest (a real
// kube-apiserver and etcd) with simulated hypervisor nodes (libvirt's test
// driver, one in-memory host per node). Scheduling is simulated by binding
// launcher pods through the API, as a scheduler would.
package lifecycle

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/novacron/operator/devenv"
	"github.com/novacron/operator/operator/manager"
	"github.com/novacron/operator/operator/provider"
	"github.com/novacron/operator/operator/provider/libvirt"
	"github.com/novacron/operator/test/testenv"
)

var (
	env *testenv.Env
	// hypervisors is shared by every operator the tests start, as one process's
	// connections would be: the simulated hosts live as long as it does.
	hypervisors *flakyConnector
	nodeURIs    map[string]string
	metricsAddr string
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m, setUp, testenv.WithTestCRDs())) }

func setUp(s *testenv.Suite) error {
	env = s.Env
	var err error
	if nodeURIs, err = env.AddSimulatedNodes(s.Ctx, s.Dir, nodes); err != nil {
		return err
	}
	inner := libvirt.NewConnector(libvirt.URIRules{Test: true})
	s.Cleanup(inner.Close)
	hypervisors = &flakyConnector{inner: inner}
	return nil
}

// nodes are two compute nodes (node-2 with a GPU and VFs); the tests bind
// launcher pods to them themselves (test/scheduling runs the scheduler).
var nodes = []devenv.SimNode{
	{Name: "node-1", Kind: devenv.NodeKind{Name: "compute", CPUs: 16, Memory: resource.MustParse("64Gi")}},
	{Name: "node-2", Kind: devenv.NodeKind{Name: "compute", CPUs: 16, Memory: resource.MustParse("64Gi"),
		// What tests assign by hand must be the node's: the operator checks.
		GPUs:  []devenv.GPUKind{{Vendor: "nvidia", Model: "tesla-t4", Count: 1}},
		SRIOV: []devenv.VFPool{{ResourceName: "intel.com/sriov_data", VFs: 2}}}},
}

// startOperator runs the operator with settings that make tests quick.
func startOperator(t *testing.T) (stop func()) {
	t.Helper()
	opts := manager.DefaultOptions()
	opts.MetricsAddr = testenv.FreeAddr(t)
	metricsAddr = opts.MetricsAddr
	opts.MetricsOpen = true // what the metrics say; test/security checks who may read them
	opts.ProbeAddr = "0"
	opts.StopGracePeriod = 5 * time.Second
	opts.StatsInterval = 500 * time.Millisecond
	opts.UnreachableRetry = 200 * time.Millisecond
	opts.SerialLogDir = t.TempDir()
	opts.Webhooks = false // test/admission covers them
	// The hook servers listen on loopback, which tenants' hooks may not
	// reach (test/security checks that).
	opts.HookEgress.Allow = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	return env.StartOperator(t, opts, hypervisors)
}

// flakyConnector lets a test take a node's hypervisor away and bring it back,
// and make starts fail, without losing the simulated host's state.
type flakyConnector struct {
	testenv.Outages
	inner     provider.Connector
	failStart atomic.Bool
}

func (f *flakyConnector) Hypervisor(ctx context.Context, uri string) (provider.Hypervisor, error) {
	if err := f.Check(uri); err != nil {
		return nil, err
	}
	h, err := f.inner.Hypervisor(ctx, uri)
	if err != nil {
		return nil, err
	}
	return f.Wrap(uri, &flakyHypervisor{Hypervisor: h, f: f}), nil
}

type flakyHypervisor struct {
	provider.Hypervisor
	f *flakyConnector
}

func (h *flakyHypervisor) Start(ctx context.Context, name string) error {
	if h.f.failStart.Load() {
		return errors.New("simulated crash before start")
	}
	return h.Hypervisor.Start(ctx, name)
}

// host is the simulated node's hypervisor as the operator sees it.
func host(t *testing.T, node string) provider.Hypervisor {
	t.Helper()
	h, err := hypervisors.inner.Hypervisor(context.Background(), nodeURIs[node])
	if err != nil {
		t.Fatal(err)
	}
	return h
}
