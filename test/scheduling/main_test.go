// Package scheduling tests novacron-scheduler, the real kube-scheduler with
// NovaCron's plugin, running in-process against envtest, together with the
// operator on simulated hypervisor nodes: VMs are applied and end up Running
// where the scheduler put them.
package scheduling

import (
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

func TestMain(m *testing.M) { os.Exit(testenv.Main(m, setUp)) }

func setUp(s *testenv.Suite) error {
	env = s.Env
	var err error
	if nodeURIs, err = env.AddSimulatedNodes(s.Ctx, s.Dir, nodes); err != nil {
		return err
	}

	connector = libvirt.NewConnector(libvirt.URIRules{Test: true})
	s.Cleanup(connector.Close)
	opts := manager.DefaultOptions()
	opts.MetricsAddr, opts.ProbeAddr, opts.Webhooks = "0", "0", false
	opts.StatsInterval = time.Second
	// Launcher pods request vCPUs at the same 2:1 the compute nodes' Hypervisors
	// allow, so Kubernetes' accounting and NovaCron's agree.
	opts.Launcher.CPUAllocationRatio = 2
	stop, _, err := env.RunOperator(opts, connector)
	if err != nil {
		return err
	}
	s.Cleanup(stop)

	// The scheduler, as manifests/scheduler/config.yaml configures it, plus the
	// same profile packing, to compare the strategies.
	stopScheduler, err := env.RunScheduler(s.Dir, testenv.WithProfileVariant("novacron-scheduler-pack", map[string]any{"scoringStrategy": "pack"}))
	if err != nil {
		return err
	}
	s.Cleanup(stopScheduler)
	return nil
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
