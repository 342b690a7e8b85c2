// Package scheduling tests novacron-scheduler, the real kube-scheduler with
// NovaCron's plugin, running in-process against envtest, together with the
// operator on simulated hypervisor nodes: VMs are applied and end up Running
// where the scheduler put them.
package scheduling

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/devenv"
	"github.com/novacron/operator/operator/manager"
	"github.com/novacron/operator/operator/provider/libvirt"
	"github.com/novacron/operator/test/testenv"
)

var (
	env       *testenv.Env
	connector *libvirt.Connector
	nodeURIs  map[string]string
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	testenv.SetLogger()
	var err error
	if env, err = testenv.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	dir, err := os.MkdirTemp("", "novacron-scheduling-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if nodeURIs, err = env.AddSimulatedNodes(ctx, dir, nodes); err != nil {
		fmt.Fprintln(os.Stderr, "setting up:", err)
		return 1
	}

	connector = libvirt.NewConnector()
	defer connector.Close()
	opts := manager.DefaultOptions()
	opts.MetricsAddr, opts.ProbeAddr, opts.Webhooks = "0", "0", false
	opts.StatsInterval = time.Second
	// Launcher pods request vCPUs at the same 2:1 the compute nodes' Hypervisors
	// allow, so Kubernetes' accounting and NovaCron's agree.
	opts.Launcher.CPUAllocationRatio = 2
	stop, _, err := env.RunOperator(opts, connector)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer stop()

	// The scheduler, as manifests/scheduler/config.yaml configures it, plus the
	// same profile packing, to compare the strategies.
	stopScheduler, err := env.RunScheduler(dir, testenv.WithProfileVariant("novacron-scheduler-pack", map[string]any{"scoringStrategy": "pack"}))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer stopScheduler()
	return m.Run()
}

// compute and gpu are the simulated nodes' kinds, published as the kubelet
// and novacron-node would (devenv.Register): capacity, CPU model, labels,
// tesla-t4 GPUs; compute nodes allow 2 vCPUs per CPU.
func compute(zone string) devenv.NodeKind {
	ratio := resource.MustParse("2")
	return devenv.NodeKind{CPUs: 8, Memory: resource.MustParse("64Gi"), CPUModel: "Icelake-Server",
		Overcommit: novacronv1.Overcommit{CPU: &ratio},
		Labels:     map[string]string{"zone": zone, "node.novacron.io/type": "compute"}}
}

func gpu(zone string) devenv.NodeKind {
	return devenv.NodeKind{CPUs: 32, Memory: resource.MustParse("128Gi"), CPUModel: "Icelake-Server",
		Labels: map[string]string{"zone": zone},
		GPUs:   []devenv.GPUKind{{Vendor: "nvidia", Model: "tesla-t4", Count: 2}}}
}

var nodes = []devenv.SimNode{
	{Name: "gpu-1", Kind: gpu("a")},
	{Name: "gpu-2", Kind: gpu("b")},
	{Name: "cpu-1", Kind: compute("a")},
	{Name: "cpu-2", Kind: compute("b")},
}
