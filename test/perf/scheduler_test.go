// Package perf holds NovaCron's performance harnesses. See README.md beside it
// for the figures and the commands that produced them.
package perf

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/devenv"
	"github.com/novacron/operator/operator/launcher"
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

	// The launcher pods' device claims are made from their VMs' templates by
	// kube-controller-manager's resourceclaim controller, as in a cluster.
	stopKCM, err := env.RunControllerManager(t.TempDir(), "resourceclaim-controller")
	require.NoError(t, err)
	t.Cleanup(stopKCM)

	// A-B-B-A: neither profile profits from running after the other (a warm
	// API server and etcd, caches, the Go runtime's heap).
	results, batched := map[string]float64{}, map[string]int{}
	for run, profile := range []string{"default-scheduler", "novacron-scheduler", "novacron-scheduler", "default-scheduler"} {
		ns := fmt.Sprintf("perf-%s-%d", profile, run)
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

		rate, hinted, err := schedule(ctx, t, env, bin, ns, pods)
		require.NoError(t, err, profile)
		results[profile] += rate / 2
		batched[profile] += hinted
		// Each profile starts from empty nodes, as in scheduler_perf where every
		// workload gets a fresh cluster: the second would otherwise place its
		// pods among the first one's 10,000.
		require.NoError(t, c.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace(ns), client.GracePeriodSeconds(0)))
		require.Eventually(t, func() bool {
			var left corev1.PodList
			return c.List(ctx, &left, client.InNamespace(ns), client.Limit(1)) == nil && len(left.Items) == 0
		}, 5*time.Minute, 100*time.Millisecond, "pods of %s deleted", profile)
		// And their devices given back: the resourceclaim controller
		// deallocates a claim once its pod is gone (deleting it is the
		// garbage collector's, which does not run here).
		require.Eventually(t, func() bool {
			var claims resourceapi.ResourceClaimList
			if c.List(ctx, &claims, client.InNamespace(ns)) != nil {
				return false
			}
			for _, claim := range claims.Items {
				if claim.Status.Allocation != nil {
					return false
				}
			}
			return true
		}, 5*time.Minute, 100*time.Millisecond, "claims of %s deallocated", profile)
		t.Logf("%s (run %d): %.0f pods/s", profile, run+1, rate)
	}
	ratio := results["novacron-scheduler"] / results["default-scheduler"]
	summary := fmt.Sprintf("nodes=%d pods=%d (A-B-B-A, means of two runs each) default=%.0f pods/s (%d batched) novacron=%.0f pods/s (%d batched) novacron/default=%.2f",
		nodes, pods, results["default-scheduler"], batched["default-scheduler"], results["novacron-scheduler"], batched["novacron-scheduler"], ratio)
	t.Log(summary)
	fmt.Fprintln(os.Stderr, "scheduler throughput: "+summary)
	// Runs of identical VMs reuse one filtering and scoring: the NovaCron
	// profile signs launcher pods (VMPlacement.SignPod, and no default
	// topology spreading to refuse them).
	assert.Positive(t, batched["novacron-scheduler"], "no VM pod was placed from a batched result")
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

// createNodes makes n nodes, published as the kubelet and novacron-node
// would (devenv.Register): 64 CPUs and 256Gi each; every fifth also has 8
// tesla-t4 GPUs and 16 SR-IOV VFs, published as DRA ResourceSlices (and the
// Hypervisor inventory): enough for every run's device VMs, as the runs
// share the nodes.
func createNodes(ctx context.Context, c client.Client, n int) error {
	plain := devenv.NodeKind{CPUs: 64, Memory: resource.MustParse("256Gi")}
	devices := plain
	devices.GPUs = []devenv.GPUKind{{Vendor: "nvidia", Model: "tesla-t4", Count: 8}}
	devices.SRIOV = []devenv.VFPool{{ResourceName: "intel.com/sriov_data", VFs: 16}}
	return parallel(n, func(i int) error {
		node := devenv.SimNode{Name: fmt.Sprintf("node-%05d", i), Kind: plain}
		if i%5 == 0 {
			node.Kind = devices
		}
		uris := map[string]string{node.Name: "qemu+tls://" + node.Name + "/system"}
		return devenv.Register(ctx, c, []devenv.SimNode{node}, uris, false)
	})
}

// createWorkload makes n VMs and their launcher pods, recorded in the VMs'
// status (as the operator would),
// for one profile: 90% plain 2-vCPU VMs, 5% with a GPU, 5% with an SR-IOV NIC,
// the devices as DRA claims made from the VMs' templates in both profiles.
func createWorkload(ctx context.Context, c client.Client, ns, profile string, n int) error {
	return parallel(n, func(i int) error {
		v := testenv.NewVM(ns, fmt.Sprintf("vm-%05d", i), 2, "4Gi")
		v.Spec.Template.Spec.SchedulerName = profile
		switch i % 20 {
		case 0:
			v.Spec.Template.Spec.Devices = []novacronv1.Device{{Type: novacronv1.DeviceTypeGPU, Vendor: "nvidia", Model: "tesla-t4", Count: 1}}
		case 10:
			v.Spec.Template.Spec.Networks = []novacronv1.Network{{Name: "data", Type: novacronv1.NetworkTypeSRIOV}}
		}
		if err := c.Create(ctx, v); err != nil {
			return err
		}
		cfg, pools := launcher.Config{Image: "registry.k8s.io/pause:3.10", CPUAllocationRatio: 1, MemoryOvercommitRatio: 1}, map[string]string{"data": "intel.com/sriov_data"}
		if tmpl := launcher.ClaimTemplate(v, cfg, pools); tmpl != nil {
			if err := c.Create(ctx, tmpl); err != nil {
				return err
			}
		}
		pod := launcher.BuildPod(v, cfg, pools)
		if err := c.Create(ctx, pod); err != nil {
			return err
		}
		// Recorded as the operator does: the scheduler places only pods
		// their VM records.
		v.Status.LauncherPodUID = pod.UID
		return c.Status().Update(ctx, v)
	})
}

// schedule runs the scheduler binary until every pod in ns is bound and
// returns pods bound per second, timed from the first binding to the last.
// hinted is how many pods opportunistic batching placed.
func schedule(ctx context.Context, t *testing.T, env *testenv.Env, bin, ns string, n int) (rate float64, hinted int, err error) {
	// The NovaCron profile exactly as manifests/scheduler/config.yaml ships it,
	// beside the upstream default profile, in one scheduler with one client.
	// The client's rate limit is raised for both so neither waits on it.
	cfg, err := env.SchedulerConfig(func(cfg map[string]any) error {
		cfg["clientConnection"].(map[string]any)["qps"] = 5000
		cfg["clientConnection"].(map[string]any)["burst"] = 10000
		cfg["profiles"] = append([]any{map[string]any{"schedulerName": "default-scheduler"}}, cfg["profiles"].([]any)...)
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	cfgFile := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		return 0, 0, err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The scheduler's own metrics say how it spent its time. For profiling,
	// set the port: go tool pprof https+insecure://127.0.0.1:PORT/debug/pprof/profile
	port := os.Getenv("NOVACRON_PERF_PPROF_PORT")
	if port == "" {
		if port, err = freePort(); err != nil {
			return 0, 0, err
		}
	}
	args := []string{"--config=" + cfgFile, "--secure-port=" + port, "--authorization-always-allow-paths=/debug/pprof,/debug/pprof/*,/metrics", "--v=0"}
	w, err := watchBound(sctx, env.Config, ns, n)
	if err != nil {
		return 0, 0, err
	}
	cmd := exec.CommandContext(sctx, bin, args...)
	logFile, err := os.Create(filepath.Join(t.TempDir(), "scheduler.log"))
	if err != nil {
		return 0, 0, err
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	select {
	case <-w.done:
	case <-time.After(20 * time.Minute):
		log, _ := os.ReadFile(logFile.Name())
		return 0, 0, fmt.Errorf("only %d of %d pods in %s were bound in time; scheduler log:\n%s", w.count(), n, ns, tail(string(log), 4000))
	}
	elapsed := w.last.Sub(w.first)
	if elapsed <= 0 {
		elapsed = time.Millisecond
	}
	// A long tail (a few pods retried after a backoff) reads very differently
	// from a steady rate: say when each part of the pods was bound.
	pct := func(q float64) time.Duration { return w.at[int(q*float64(len(w.at)-1))].Round(time.Millisecond) }
	t.Logf("%s: bound 50%% by %s, 90%% by %s, 99%% by %s, all by %s", ns, pct(0.5), pct(0.9), pct(0.99), pct(1))
	// How even the placement is: batching must not cost spreading.
	most := 0
	for _, c := range w.perNode {
		most = max(most, c)
	}
	t.Logf("%s: placed on %d nodes, at most %d on one", ns, len(w.perNode), most)
	hinted, err = schedulerMetrics(t, port, os.Getenv("NOVACRON_PERF_PPROF_PORT") != "")
	if err != nil {
		return 0, 0, err
	}
	return float64(n) / elapsed.Seconds(), hinted, nil
}

// boundWatch counts a namespace's pods as they are bound, from a watch (not
// by listing: listing 10,000 pods every few milliseconds would take the API
// server's CPU from the scheduler being measured on the same cores).
type boundWatch struct {
	want        int
	mu          sync.Mutex
	bound       map[string]bool
	perNode     map[string]int
	first, last time.Time
	at          []time.Duration // since first, in binding order
	done        chan struct{}
}

func watchBound(ctx context.Context, cfg *rest.Config, ns string, want int) (*boundWatch, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	w := &boundWatch{want: want, bound: map[string]bool{}, perNode: map[string]int{}, done: make(chan struct{})}
	informer := cache.NewSharedIndexInformer(cache.NewListWatchFromClient(cs.CoreV1().RESTClient(), "pods", ns, fields.Everything()), &corev1.Pod{}, 0, cache.Indexers{})
	see := func(o any) {
		if p, ok := o.(*corev1.Pod); ok && p.Spec.NodeName != "" {
			w.see(p.Name, p.Spec.NodeName)
		}
	}
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: see, UpdateFunc: func(_, o any) { see(o) }}); err != nil {
		return nil, err
	}
	go informer.RunWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		return nil, fmt.Errorf("pods in %s: cache did not sync", ns)
	}
	return w, nil
}

func (w *boundWatch) see(name, node string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.bound[name] {
		return
	}
	now := time.Now()
	if len(w.bound) == 0 {
		w.first = now
	}
	w.bound[name] = true
	w.perNode[node]++
	w.last = now
	w.at = append(w.at, now.Sub(w.first))
	if len(w.bound) == w.want {
		close(w.done)
	}
}

func (w *boundWatch) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.bound)
}

// schedulerMetrics reads the scheduler's /metrics: how many pods were placed
// from a batched result and, with all, logs the summed time of each extension
// point and plugin (the framework samples plugin durations) and the outcome of
// every attempt.
func schedulerMetrics(t *testing.T, port string, all bool) (hinted int, err error) {
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // the test's own scheduler
	resp, err := hc.Get("https://127.0.0.1:" + port + "/metrics")
	if err != nil {
		return 0, fmt.Errorf("scheduler metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("scheduler metrics: %w", err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "scheduler_batch_attempts_total") && strings.Contains(line, `result="hint_used"`) {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				return 0, fmt.Errorf("scheduler metrics: %q: %w", line, err)
			}
			hinted += int(v)
		}
		if all && (strings.HasPrefix(line, "scheduler_batch_") && !strings.Contains(line, "_bucket") ||
			strings.HasPrefix(line, "scheduler_schedule_attempts_total") ||
			strings.HasPrefix(line, "scheduler_framework_extension_point_duration_seconds_sum") ||
			strings.HasPrefix(line, "scheduler_plugin_execution_duration_seconds_sum")) {
			t.Log(line)
		}
	}
	return hinted, nil
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port), nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
