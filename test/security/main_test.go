// Package security is the attacker suite: tenants, acting through
// impersonation with only the roles a platform team gives them, try to take
// what is not theirs (host devices, host paths, privileged pods, other
// identities' rights, Secrets, the scheduler's and the operator's trust)
// and to stall the cluster. Each test plays one attack against the real API
// server, the operator with its webhooks, and novacron-scheduler, and checks
// what reaches the simulated hypervisors.
package security

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/novacron/operator/devenv"
	"github.com/novacron/operator/operator/manager"
	"github.com/novacron/operator/operator/provider"
	"github.com/novacron/operator/operator/provider/libvirt"
	"github.com/novacron/operator/test/testenv"
)

const timeout = 60 * time.Second

var (
	env      *testenv.Env
	nodeURIs map[string]string
	defined  = &recorder{domains: map[string]provider.Domain{}}
	// hookHost is the one address the suite's operator lets hooks reach
	// besides the public internet: the tests' own hook servers listen there.
	hookHost = "127.0.0.2"
	// metricsAddr is where the operator serves /metrics, as in a cluster.
	metricsAddr string
)

func TestMain(m *testing.M) {
	os.Exit(testenv.Main(m, setUp, testenv.WithWebhooks(), testenv.WithTestCRDs()))
}

// nodes: one GPU node with two T4s, one plain compute node.
var nodes = []devenv.SimNode{
	{Name: "gpu-1", Kind: devenv.NodeKind{Name: "gpu", CPUs: 16, Memory: resource.MustParse("64Gi"), CPUModel: "Icelake-Server",
		GPUs: []devenv.GPUKind{{Vendor: "nvidia", Model: "tesla-t4", Count: 2}}}},
	{Name: "cpu-1", Kind: devenv.NodeKind{Name: "compute", CPUs: 16, Memory: resource.MustParse("64Gi"), CPUModel: "Icelake-Server"}},
}

func setUp(s *testenv.Suite) error {
	env = s.Env
	var err error
	if nodeURIs, err = env.AddSimulatedNodes(s.Ctx, s.Dir, nodes); err != nil {
		return err
	}
	connector := libvirt.NewConnector(libvirt.URIRules{Test: true})
	s.Cleanup(connector.Close)
	defined.Connector = connector
	opts := manager.DefaultOptions()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	metricsAddr = l.Addr().String()
	l.Close()
	opts.MetricsAddr, opts.ProbeAddr = metricsAddr, "0"
	opts.StatsInterval = time.Second
	opts.HookEgress.Allow = []netip.Prefix{netip.MustParsePrefix(hookHost + "/32")}
	stop, err := env.RunOperatorWithWebhooks(s.Dir, opts, defined)
	if err != nil {
		return err
	}
	s.Cleanup(stop)
	stopScheduler, err := env.RunScheduler(s.Dir)
	if err != nil {
		return err
	}
	s.Cleanup(stopScheduler)
	// The tenant roles, as a platform team installs them.
	_, err = env.Kubectl(s.Ctx, "apply", "-f", filepath.Join(env.RepoRoot, "manifests", "rbac", "tenant-roles.yaml"))
	return err
}

// as is a client that acts as user, as the API server's impersonation lets
// an administrator do: every request is authorized as that user.
func as(t *testing.T, user string) client.Client {
	t.Helper()
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:authenticated"}}
	c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// recorder passes every call to the simulated hypervisors on, and keeps the
// last definition of each domain: what a VM got on its node.
type recorder struct {
	provider.Connector
	mu      sync.Mutex
	domains map[string]provider.Domain
}

func (r *recorder) Hypervisor(ctx context.Context, uri string) (provider.Hypervisor, error) {
	h, err := r.Connector.Hypervisor(ctx, uri)
	if err != nil {
		return nil, err
	}
	return &recordingHypervisor{Hypervisor: h, r: r}, nil
}

// domain is the last definition of a domain, ok false when it was never
// defined.
func (r *recorder) domain(name string) (provider.Domain, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d, ok := r.domains[name]
	return d, ok
}

type recordingHypervisor struct {
	provider.Hypervisor
	r *recorder
}

func (h *recordingHypervisor) Define(ctx context.Context, d provider.Domain) error {
	h.r.mu.Lock()
	h.r.domains[d.Name] = d
	h.r.mu.Unlock()
	return h.Hypervisor.Define(ctx, d)
}

// listenHooks listens where the suite's hooks may go.
func listenHooks(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", hookHost+":0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}
