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

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/devenv/simnode"
	"github.com/novacron/operator/operator/manager"
	"github.com/novacron/operator/operator/provider/libvirt"
	"github.com/novacron/operator/test/testenv"
)

var (
	env       *testenv.Env
	connector *libvirt.Connector
	nodeURIs  = map[string]string{}
	nodesDir  string
)

const imageVolume = "ubuntu-22.04.qcow2"

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	ctrl.SetLogger(zap.New(zap.Level(zapcore.ErrorLevel)))
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
	nodesDir = dir
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := setUp(ctx, dir); err != nil {
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

// node describes a simulated node: Kubernetes Node plus Hypervisor.
type node struct {
	name   string
	cpus   int64
	memGi  int64
	ratio  string // vCPU overcommit
	labels map[string]string
	gpus   int // tesla-t4s
}

var nodes = []node{
	{name: "gpu-1", cpus: 32, memGi: 128, ratio: "1", labels: map[string]string{"zone": "a"}, gpus: 2},
	{name: "gpu-2", cpus: 32, memGi: 128, ratio: "1", labels: map[string]string{"zone": "b"}, gpus: 2},
	{name: "cpu-1", cpus: 8, memGi: 64, ratio: "2", labels: map[string]string{"zone": "a", "node.novacron.io/type": "compute"}},
	{name: "cpu-2", cpus: 8, memGi: 64, ratio: "2", labels: map[string]string{"zone": "b", "node.novacron.io/type": "compute"}},
}

func setUp(ctx context.Context, dir string) error {
	c := env.Client
	if err := env.InstallImageCatalog(ctx, map[string]string{"ubuntu-22.04-lts": imageVolume}); err != nil {
		return err
	}
	for _, n := range nodes {
		uri, err := simnode.Write(dir, simnode.Node{Name: n.name, CPUs: int(n.cpus), MemoryBytes: n.memGi << 30, Images: []string{imageVolume}})
		if err != nil {
			return err
		}
		nodeURIs[n.name] = uri
		labels := map[string]string{"kubernetes.io/hostname": n.name}
		for k, v := range n.labels {
			labels[k] = v
		}
		// What the kubelet and novacron-node would publish: capacity, the
		// GPUs as extended resources, and readiness.
		alloc := corev1.ResourceList{
			corev1.ResourceCPU:    *resource.NewQuantity(n.cpus, resource.DecimalSI),
			corev1.ResourceMemory: *resource.NewQuantity(n.memGi<<30, resource.BinarySI),
			corev1.ResourcePods:   resource.MustParse("110"),
		}
		if n.gpus > 0 {
			alloc["devices.novacron.io/nvidia-tesla-t4"] = *resource.NewQuantity(int64(n.gpus), resource.DecimalSI)
		}
		kn := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.name, Labels: labels}}
		if err := c.Create(ctx, kn); err != nil {
			return err
		}
		kn.Status = corev1.NodeStatus{Capacity: alloc, Allocatable: alloc, Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}
		if err := c.Status().Update(ctx, kn); err != nil {
			return err
		}
		// The API server taints new nodes not-ready until a node controller
		// sees them ready; there is none here, so do its part.
		kn.Spec.Taints = nil
		if err := c.Update(ctx, kn); err != nil {
			return err
		}
		ratio := resource.MustParse(n.ratio)
		hv := &novacronv1.Hypervisor{ObjectMeta: metav1.ObjectMeta{Name: n.name}, Spec: novacronv1.HypervisorSpec{URI: uri, StoragePool: "default", Overcommit: novacronv1.Overcommit{CPU: &ratio}}}
		if err := c.Create(ctx, hv); err != nil {
			return err
		}
		hv.Status.Capacity = corev1.ResourceList{corev1.ResourceCPU: *resource.NewQuantity(n.cpus, resource.DecimalSI), corev1.ResourceMemory: *resource.NewQuantity(n.memGi<<30, resource.BinarySI)}
		hv.Status.CPUModel = "Icelake-Server"
		for i := 0; i < n.gpus; i++ {
			hv.Status.GPUs = append(hv.Status.GPUs, novacronv1.GPU{Vendor: "nvidia", Model: "tesla-t4", PCIAddress: fmt.Sprintf("0000:%02x:00.0", 0x3b+i), NUMANode: int32(i % 2)})
		}
		if err := c.Status().Update(ctx, hv); err != nil {
			return err
		}
	}
	return nil
}
