// Package migration tests VirtualMachineMigrations on envtest with the real
// scheduler placing target pods and the operator moving VMs between simulated
// nodes. libvirt's test driver cannot migrate, so the nodes' hypervisors are
// wrapped: Migrate re-creates the domain on the destination node (from the
// definition the operator gave the source) and removes it from the source, as
// a peer-to-peer migration with PERSIST_DEST and UNDEFINE_SOURCE does. The
// real migration runs in test/lab.
package migration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/novacron/operator/devenv"
	"github.com/novacron/operator/operator/manager"
	"github.com/novacron/operator/operator/provider"
	"github.com/novacron/operator/operator/provider/libvirt"
	"github.com/novacron/operator/test/testenv"
)

var (
	env   *testenv.Env
	hosts *migrator
	uris  map[string]string
	// restartOperator stops the running operator and starts a new one.
	restartOperator func() error
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m, setUp)) }

func setUp(s *testenv.Suite) error {
	env = s.Env
	profile, err := devenv.ParseProfile([]byte(`nodes: [{name: node, cpus: 16, memory: 64Gi, cpuModel: Icelake-Server}]`))
	if err != nil {
		return err
	}
	if uris, err = env.AddSimulatedNodes(s.Ctx, s.Dir, profile.Expand(2)); err != nil {
		return err
	}

	inner := libvirt.NewConnector(libvirt.URIRules{Test: true})
	s.Cleanup(inner.Close)
	hosts = &migrator{inner: inner, defs: map[string]provider.Domain{}, moving: map[string]bool{}, paused: map[string]bool{}}
	opts := manager.DefaultOptions()
	opts.MetricsAddr, opts.ProbeAddr, opts.Webhooks = "0", "0", false
	opts.StopGracePeriod = 2 * time.Second
	opts.MigrationPoll = 20 * time.Millisecond
	opts.MigrationLimits.MaxOutbound = 1
	stop, errs, err := env.RunOperator(opts, hosts)
	if err != nil {
		return err
	}
	restartOperator = func() error {
		stop()
		if err := <-errs; err != nil {
			return err
		}
		stop, errs, err = env.RunOperator(opts, hosts)
		return err
	}
	s.Cleanup(func() { stop() })

	stopScheduler, err := env.RunScheduler(s.Dir)
	if err != nil {
		return err
	}
	s.Cleanup(stopScheduler)
	return nil
}

// migrator wraps the simulated nodes' hypervisors with a Migrate that moves
// the domain's definition, and lets tests hold or fail migrations and take
// nodes down. A node that is down fails every call but still hands out
// hypervisors, as a libvirt connection cached before the node's libvirtd died
// does until a call finds it broken.
type migrator struct {
	testenv.Faults
	testenv.Outages
	inner provider.Connector
	mu    sync.Mutex
	defs  map[string]provider.Domain // uri + "/" + domain -> definition
	// moving holds the uri + "/" + domain of migrations in flight.
	moving map[string]bool
	// paused holds the uri + "/" + domain of guests shown as paused, as a
	// source shows its guest while switching over.
	paused map[string]bool
}

// pause shows the domain on the hypervisor at uri as paused.
func (g *migrator) pause(uri, domain string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.paused[uri+"/"+domain] = true
}

func (h *simHypervisor) State(ctx context.Context, domain string) (provider.DomainState, error) {
	st, err := h.Hypervisor.State(ctx, domain)
	h.g.mu.Lock()
	defer h.g.mu.Unlock()
	if err == nil && st == provider.StateRunning && h.g.paused[h.uri+"/"+domain] {
		return provider.StatePaused, nil
	}
	return st, err
}

func (g *migrator) Hypervisor(ctx context.Context, uri string) (provider.Hypervisor, error) {
	h, err := g.inner.Hypervisor(ctx, uri)
	if err != nil {
		return nil, err
	}
	return g.Wrap(uri, &simHypervisor{Hypervisor: h, uri: uri, g: g}), nil
}

type simHypervisor struct {
	provider.Hypervisor
	uri string
	g   *migrator
}

func (h *simHypervisor) Define(ctx context.Context, d provider.Domain) error {
	if err := h.Hypervisor.Define(ctx, d); err != nil {
		return err
	}
	h.g.mu.Lock()
	defer h.g.mu.Unlock()
	h.g.defs[h.uri+"/"+d.Name] = d
	return nil
}

var errMigration = errors.New("simulated: migration stream broken")

func (h *simHypervisor) Migrate(ctx context.Context, domain string, o provider.MigrateOptions) error {
	h.g.mu.Lock()
	h.g.moving[h.uri+"/"+domain] = true
	h.g.mu.Unlock()
	defer func() {
		h.g.mu.Lock()
		delete(h.g.moving, h.uri+"/"+domain)
		h.g.mu.Unlock()
	}()
	fail, err := h.g.Enter(ctx)
	if err != nil {
		return err
	}
	if fail {
		return errMigration
	}
	h.g.mu.Lock()
	def, ok := h.g.defs[h.uri+"/"+domain]
	h.g.mu.Unlock()
	if !ok {
		return fmt.Errorf("no definition of %s on %s", domain, h.uri)
	}
	dest, err := h.g.Hypervisor(context.Background(), o.DestURI)
	if err != nil {
		return err
	}
	if err := dest.Define(context.Background(), def); err != nil {
		return err
	}
	if err := dest.Start(context.Background(), domain); err != nil {
		return err
	}
	return h.Hypervisor.Undefine(context.Background(), domain)
}

func (h *simHypervisor) MigrationProgress(ctx context.Context, domain string) (provider.MigrationProgress, error) {
	h.g.mu.Lock()
	running := h.g.moving[h.uri+"/"+domain]
	h.g.mu.Unlock()
	if _, err := h.Hypervisor.State(ctx, domain); err != nil {
		return provider.MigrationProgress{}, err
	}
	if running {
		return provider.MigrationProgress{DataTotal: 1 << 30, DataProcessed: 1 << 29, DataRemaining: 1 << 29, Iterations: 1, Elapsed: time.Second}, nil
	}
	return provider.MigrationProgress{Completed: true, DataTotal: 1 << 30, DataProcessed: 1 << 30, Iterations: 3, Elapsed: 2 * time.Second, Downtime: 42 * time.Millisecond}, nil
}

func (h *simHypervisor) AbortMigration(context.Context, string) error { return nil }
