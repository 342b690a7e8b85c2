// Package snapshots tests VirtualMachineSnapshots, VirtualMachineRestores and
// snapshot schedules: the operator on envtest with a simulated node (libvirt's
// test driver takes and reverts internal snapshots) and a fake clock that the
// tests step through the schedule.
package snapshots

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/novacron/operator/devenv"
	"github.com/novacron/operator/operator/manager"
	"github.com/novacron/operator/operator/provider"
	"github.com/novacron/operator/operator/provider/libvirt"
	"github.com/novacron/operator/test/testenv"
)

const (
	ns   = "default"
	node = "node-1"
)

var (
	env   *testenv.Env
	hosts *gatedConnector
	clock *clocktesting.FakeClock
	uri   string
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m, setUp)) }

func setUp(s *testenv.Suite) error {
	env = s.Env
	uris, err := env.AddSimulatedNodes(s.Ctx, s.Dir, []devenv.SimNode{{Name: node, Kind: devenv.NodeKind{Name: "compute", CPUs: 16, Memory: resource.MustParse("64Gi")}}})
	if err != nil {
		return err
	}
	uri = uris[node]

	inner := libvirt.NewConnector(libvirt.URIRules{Test: true})
	s.Cleanup(inner.Close)
	hosts = &gatedConnector{inner: inner}
	clock = clocktesting.NewFakeClock(time.Now())
	opts := manager.DefaultOptions()
	opts.MetricsAddr, opts.ProbeAddr, opts.Webhooks = "0", "0", false
	opts.StopGracePeriod = 2 * time.Second
	opts.Clock = clock
	opts.ScheduleResync = 50 * time.Millisecond
	opts.SnapshotRetryBase = 20 * time.Millisecond
	stop, _, err := env.RunOperator(opts, hosts)
	if err != nil {
		return err
	}
	s.Cleanup(stop)
	return nil
}

// gatedConnector lets a test hold snapshots in progress and make them fail.
type gatedConnector struct {
	testenv.Faults
	inner provider.Connector
}

func (g *gatedConnector) Hypervisor(ctx context.Context, uri string) (provider.Hypervisor, error) {
	h, err := g.inner.Hypervisor(ctx, uri)
	if err != nil {
		return nil, err
	}
	return &gatedHypervisor{Hypervisor: h, g: g}, nil
}

type gatedHypervisor struct {
	provider.Hypervisor
	g *gatedConnector
}

func (h *gatedHypervisor) CreateSnapshot(ctx context.Context, domain string, req provider.SnapshotRequest) (provider.Snapshot, error) {
	fail, err := h.g.Enter(ctx)
	if err != nil {
		return provider.Snapshot{}, err
	}
	if fail {
		return provider.Snapshot{}, errFlaky
	}
	return h.Hypervisor.CreateSnapshot(ctx, domain, req)
}

// errFlaky is a failure that may pass.
var errFlaky = errors.New("simulated: qemu monitor busy")
