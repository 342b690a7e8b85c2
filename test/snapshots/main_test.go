// Package snapshots tests VirtualMachineSnapshots, VirtualMachineRestores and
// snapshot schedules: the operator on envtest with a simulated node (libvirt's
// test driver takes and reverts internal snapshots) and a fake clock that the
// tests step through the schedule.
package snapshots

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/devenv/simnode"
	"github.com/novacron/operator/operator/manager"
	"github.com/novacron/operator/operator/provider"
	"github.com/novacron/operator/operator/provider/libvirt"
	"github.com/novacron/operator/test/testenv"
)

const (
	ns          = "default"
	node        = "node-1"
	imageVolume = "ubuntu-22.04.qcow2"
)

var (
	env   *testenv.Env
	hosts *gatedConnector
	clock *clocktesting.FakeClock
	uri   string
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	ctrl.SetLogger(zap.New(zap.Level(zapcore.Level(logLevel()))))
	var err error
	if env, err = testenv.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	dir, err := os.MkdirTemp("", "novacron-snapshots-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	if err := env.InstallImageCatalog(ctx, map[string]string{"ubuntu-22.04-lts": imageVolume}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if uri, err = simnode.Write(dir, simnode.Node{Name: node, Images: []string{imageVolume}}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := env.Client.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := env.Client.Create(ctx, &novacronv1.Hypervisor{ObjectMeta: metav1.ObjectMeta{Name: node},
		Spec: novacronv1.HypervisorSpec{URI: uri, StoragePool: "default"}}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}

	inner := libvirt.NewConnector()
	defer inner.Close()
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
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer stop()
	return m.Run()
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

// logLevel shows the operator's logs with NOVACRON_TEST_VERBOSE set.
func logLevel() int8 {
	if os.Getenv("NOVACRON_TEST_VERBOSE") != "" {
		return -1
	}
	return 2 // errors only
}
