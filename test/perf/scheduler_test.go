// Package perf holds NovaCron's performance harnesses. See README.md beside it
// for the figures and the commands that produced them.
package perf

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/vm"
	"github.com/novacron/operator/test/testenv"
)

// scheduler_perf-style throughput: the same workload of VM launcher pods is
// scheduled by the upstream default profile and by the NovaCron profile, in one
// run, by the real novacron-scheduler binary against an in-process API server
// with nodes and Hypervisor objects created through the API. Pods are created
// first and the scheduler started after, so the figure is scheduling
// throughput (pods bound per second), not the API server's create rate.
//
// Sizes come from NOVACRON_PERF_NODES and NOVACRON_PERF_PODS; the defaults are
// the short version `make test` runs so the harness cannot rot.
func TestSchedulerThroughput(t *testing.T) {
	nodes := envInt("NOVACRON_PERF_NODES", 60)
	pods := envInt("NOVACRON_PERF_PODS", 300)
	env, err := testenv.Start(testenv.WithTestCRDs())
	require.NoError(t, err)
	t.Cleanup(func() { _ = env.Stop() })
	ctx := context.Background()

	bin := filepath.Join(t.TempDir(), "novacron-scheduler")
	build := exec.Command("go", "build", "-o", bin, "./cmd/novacron-scheduler")
	build.Dir = env.RepoRoot
	out, err := build.CombinedOutput()
	require.NoError(t, err, string(out))

	cfg := rest.CopyConfig(env.Config)
	cfg.QPS, cfg.Burst = 5000, 10000
	c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	require.NoError(t, err)

	start := time.Now()
	require.NoError(t, createNodes(ctx, c, nodes))
	t.Logf("%d nodes with Hypervisors created in %s", nodes, time.Since(start).Round(time.Millisecond))

	results := map[string]float64{}
	for _, profile := range []string{"default-scheduler", "novacron-scheduler"} {
		ns := "perf-" + profile
		require.NoError(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
		nad := &unstructured.Unstructured{}
		nad.SetGroupVersionKind(schema.GroupVersionKind{Group: "k8s.cni.cncf.io", Version: "v1", Kind: "NetworkAttachmentDefinition"})
		nad.SetNamespace(ns)
		nad.SetName("data")
		nad.SetAnnotations(map[string]string{"k8s.v1.cni.cncf.io/resourceName": "intel.com/sriov_data"})
		require.NoError(t, c.Create(ctx, nad))
		start := time.Now()
		require.NoError(t, createWorkload(ctx, c, ns, profile, pods))
		t.Logf("%s: %d pods created in %s", profile, pods, time.Since(start).Round(time.Millisecond))

		rate, err := schedule(ctx, t, env, c, bin, ns, pods)
		require.NoError(t, err, profile)
		results[profile] = rate
		t.Logf("%s: %.0f pods/s", profile, rate)
	}
	ratio := results["novacron-scheduler"] / results["default-scheduler"]
	t.Logf("nodes=%d pods=%d default=%.0f pods/s novacron=%.0f pods/s ratio=%.2f", nodes, pods, results["default-scheduler"], results["novacron-scheduler"], ratio)
	fmt.Fprintf(os.Stderr, "scheduler throughput: nodes=%d pods=%d default=%.0f pods/s novacron=%.0f pods/s novacron/default=%.2f\n",
		nodes, pods, results["default-scheduler"], results["novacron-scheduler"], ratio)
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// parallel runs f for 0..n-1 on a few workers and returns the first error.
func parallel(n int, f func(i int) error) error {
	var wg sync.WaitGroup
	var next atomic.Int64
	errs := make(chan error, 1)
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// createNodes makes n nodes: 64 CPUs and 256Gi each; every fifth also has 8
// tesla-t4 GPUs and 16 SR-IOV VFs, as extended resources for the default
// profile and as Hypervisor inventory for NovaCron's: enough for both profiles'
// device VMs, as the two runs share the nodes.
func createNodes(ctx context.Context, c client.Client, n int) error {
	return parallel(n, func(i int) error {
		name := fmt.Sprintf("node-%05d", i)
		gpu := i%5 == 0
		alloc := corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("64"),
			corev1.ResourceMemory: resource.MustParse("256Gi"),
			corev1.ResourcePods:   resource.MustParse("110"),
		}
		if gpu {
			alloc["devices.novacron.io/nvidia-tesla-t4"] = resource.MustParse("8")
			alloc["intel.com/sriov_data"] = resource.MustParse("16")
		}
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name}}}
		if err := c.Create(ctx, node); err != nil {
			return err
		}
		node.Status = corev1.NodeStatus{Capacity: alloc, Allocatable: alloc, Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}
		if err := c.Status().Update(ctx, node); err != nil {
			return err
		}
		node.Spec.Taints = nil
		if err := c.Update(ctx, node); err != nil {
			return err
		}
		hv := &novacronv1.Hypervisor{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: novacronv1.HypervisorSpec{URI: "qemu+tls://" + name + "/system"}}
		if err := c.Create(ctx, hv); err != nil {
			return err
		}
		hv.Status.Capacity = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("64"), corev1.ResourceMemory: resource.MustParse("256Gi")}
		if gpu {
			pool := novacronv1.SRIOVPool{ResourceName: "intel.com/sriov_data"}
			for g := 0; g < 8; g++ {
				hv.Status.GPUs = append(hv.Status.GPUs, novacronv1.GPU{Vendor: "nvidia", Model: "tesla-t4", PCIAddress: fmt.Sprintf("0000:%02x:00.0", 0x3b+g), NUMANode: int32(g / 4)})
			}
			for v := 0; v < 16; v++ {
				pool.VirtualFunctions = append(pool.VirtualFunctions, novacronv1.VirtualFunction{PCIAddress: fmt.Sprintf("0000:5e:%02x.%d", 2+v/8, v%8), NUMANode: int32(v / 8)})
			}
			hv.Status.SRIOV = []novacronv1.SRIOVPool{pool}
		}
		return c.Status().Update(ctx, hv)
	})
}

// createWorkload makes n VMs and their launcher pods (as the operator would),
// for one profile: 90% plain 2-vCPU VMs, 5% with a GPU, 5% with an SR-IOV NIC.
func createWorkload(ctx context.Context, c client.Client, ns, profile string, n int) error {
	return parallel(n, func(i int) error {
		v := &novacronv1.VirtualMachine{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("vm-%05d", i), Namespace: ns},
			Spec: novacronv1.VirtualMachineSpec{Running: ptr.To(true), Template: novacronv1.VirtualMachineTemplateSpec{Spec: novacronv1.VirtualMachineInstanceSpec{
				Resources:     novacronv1.VMResources{CPU: 2, Memory: resource.MustParse("4Gi")},
				Image:         novacronv1.ImageSource{Source: "marketplace://ubuntu-22.04-lts"},
				SchedulerName: profile,
			}}},
		}
		switch i % 20 {
		case 0:
			v.Spec.Template.Spec.Devices = []novacronv1.Device{{Type: novacronv1.DeviceTypeGPU, Vendor: "nvidia", Model: "tesla-t4", Count: 1}}
		case 10:
			v.Spec.Template.Spec.Networks = []novacronv1.Network{{Name: "data", Type: novacronv1.NetworkTypeSRIOV}}
		}
		if err := c.Create(ctx, v); err != nil {
			return err
		}
		pod := vm.BuildLauncherPod(v, vm.LauncherConfig{Image: "registry.k8s.io/pause:3.10", CPUAllocationRatio: 1, MemoryOvercommitRatio: 1},
			map[string]string{"data": "intel.com/sriov_data"})
		return c.Create(ctx, pod)
	})
}

// schedule runs the scheduler binary until every pod in ns is bound and
// returns pods bound per second, timed from the first binding to the last.
func schedule(ctx context.Context, t *testing.T, env *testenv.Env, c client.Client, bin, ns string, n int) (float64, error) {
	cfgFile := filepath.Join(t.TempDir(), "config.yaml")
	cfg := fmt.Sprintf(`apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
leaderElection: {leaderElect: false}
clientConnection: {kubeconfig: %s, qps: 5000, burst: 10000}
profiles:
  - schedulerName: default-scheduler
  - schedulerName: novacron-scheduler
    plugins:
      multiPoint:
        enabled:
          - {name: VMPlacement, weight: 10}
      filter:
        enabled:
          - name: VMPlacement
`, env.Kubeconfig)
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		return 0, err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	args := []string{"--config=" + cfgFile, "--secure-port=0", "--v=0"}
	if port := os.Getenv("NOVACRON_PERF_PPROF_PORT"); port != "" {
		// For profiling: go tool pprof https+insecure://127.0.0.1:PORT/debug/pprof/profile
		args = append(args[:1], "--secure-port="+port, "--authorization-always-allow-paths=/debug/pprof,/debug/pprof/*", "--v=0")
	}
	cmd := exec.CommandContext(sctx, bin, args...)
	logFile, err := os.Create(filepath.Join(t.TempDir(), "scheduler.log"))
	if err != nil {
		return 0, err
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	var first time.Time
	deadline := time.Now().Add(20 * time.Minute)
	for time.Now().Before(deadline) {
		var list corev1.PodList
		if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return 0, err
		}
		bound := 0
		for _, p := range list.Items {
			if p.Spec.NodeName != "" {
				bound++
			}
		}
		if bound > 0 && first.IsZero() {
			first = time.Now()
		}
		if bound == n {
			elapsed := time.Since(first)
			if elapsed <= 0 {
				elapsed = time.Millisecond
			}
			return float64(n) / elapsed.Seconds(), nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	log, _ := os.ReadFile(logFile.Name())
	return 0, fmt.Errorf("not all %d pods in %s were bound in time; scheduler log:\n%s", n, ns, tail(string(log), 4000))
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
