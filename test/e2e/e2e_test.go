// Package e2e drives NovaCron as a newcomer does: it starts `novacron dev`,
// then runs the README's kubectl commands, verbatim, against it with the
// kubectl `make envtest` built.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/novacron/operator/test/testenv"
)

// dev is a running `novacron dev`.
type dev struct {
	cmd        *exec.Cmd
	tmp        string
	root       string
	assets     string
	kubeconfig string
	metrics    string
	out        *syncBuffer
}

// syncBuffer collects a process's output while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

// startDev builds cmd/novacron and starts `novacron dev` with its own TMPDIR,
// so the test can check afterwards that nothing was left behind.
func startDev(t *testing.T) *dev {
	root, err := testenv.RepoRoot()
	require.NoError(t, err)
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	require.NotEmpty(t, assets, "KUBEBUILDER_ASSETS: run through `make test-e2e`")
	bin := filepath.Join(t.TempDir(), "novacron")
	build := exec.Command("go", "build", "-o", bin, "./cmd/novacron")
	build.Dir = root
	out, err := build.CombinedOutput()
	require.NoError(t, err, string(out))

	tmp, err := os.MkdirTemp("", "novacron-e2e-tmp-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(tmp) })
	d := &dev{tmp: tmp, root: root, assets: assets, metrics: freePort(t), out: &syncBuffer{}}
	d.cmd = exec.Command(bin, "dev", "--metrics-bind-address", d.metrics)
	d.cmd.Dir = root
	d.cmd.Env = append(os.Environ(), "TMPDIR="+tmp, "KUBEBUILDER_ASSETS="+assets)
	d.cmd.Stderr = d.out
	stdout, err := d.cmd.StdoutPipe()
	require.NoError(t, err)
	start := time.Now()
	require.NoError(t, d.cmd.Start())
	t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			_ = d.cmd.Process.Kill()
			_, _ = d.cmd.Process.Wait()
		}
	})
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			fmt.Fprintln(d.out, sc.Text())
			lines <- sc.Text()
		}
		close(lines)
	}()
	timeout := time.After(3 * time.Minute)
	for d.kubeconfig == "" || !strings.Contains(d.out.String(), "Ctrl-C stops everything") {
		select {
		case l, ok := <-lines:
			require.True(t, ok, "novacron dev exited before it was ready:\n%s", d.out.String())
			if k, ok := strings.CutPrefix(strings.TrimSpace(l), "export KUBECONFIG="); ok {
				d.kubeconfig = k
			}
		case <-timeout:
			t.Fatalf("novacron dev not ready after 3 minutes:\n%s", d.out.String())
		}
	}
	// Keep draining so the process never blocks on a full pipe.
	go func() {
		for range lines {
		}
	}()
	t.Logf("novacron dev ready in %s", time.Since(start).Round(100*time.Millisecond))
	return d
}

// kubectl runs a README command line (starting with "kubectl") in the
// repository with the dev kubeconfig and the built kubectl first on PATH.
func (d *dev) command(ctx context.Context, line string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "bash", "-c", line)
	cmd.Dir = d.root
	cmd.Env = append(os.Environ(), "KUBECONFIG="+d.kubeconfig, "PATH="+d.assets+":"+os.Getenv("PATH"))
	return cmd
}

func (d *dev) kubectl(t *testing.T, line string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := d.command(ctx, line).CombinedOutput()
	require.NoError(t, err, "%s:\n%s", line, out)
	return string(out)
}

// wait blocks until the VM's phase is the one given, with kubectl wait.
func (d *dev) waitPhase(t *testing.T, vm, phase string) {
	t.Helper()
	d.kubectl(t, fmt.Sprintf("kubectl wait --for=jsonpath='{.status.phase}'=%s vm/%s --timeout=90s", phase, vm))
}

// waitEvents runs the README's `kubectl get events` for an object until its
// output has every text given: events are written after the change they
// report, so they can trail it.
func (d *dev) waitEvents(t *testing.T, name string, texts ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out := d.kubectl(t, "kubectl get events --field-selector involvedObject.name="+name)
		if !slices.ContainsFunc(texts, func(s string) bool { return !strings.Contains(out, s) }) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("events of %s: want %q, last seen:\n%s", name, texts, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// stop sends Ctrl-C and waits for a clean exit.
func (d *dev) stop(t *testing.T) {
	t.Helper()
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGINT))
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		require.NoError(t, err, "novacron dev exit:\n%s", d.out.String())
	case <-time.After(time.Minute):
		t.Fatalf("novacron dev did not exit a minute after Ctrl-C:\n%s", d.out.String())
	}
}

// leftovers lists what is still in the private TMPDIR and the processes
// whose command line names it (etcd and kube-apiserver keep their data there).
func leftovers(t *testing.T, tmp string) (files, procs []string) {
	entries, err := os.ReadDir(tmp)
	require.NoError(t, err)
	for _, e := range entries {
		files = append(files, e.Name())
	}
	pids, err := filepath.Glob("/proc/[0-9]*/cmdline")
	require.NoError(t, err)
	for _, p := range pids {
		cmdline, err := os.ReadFile(p)
		if err != nil {
			continue // exited meanwhile
		}
		if bytes.Contains(cmdline, []byte(tmp)) {
			procs = append(procs, strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	return files, procs
}

func TestReadmeWorkflow(t *testing.T) {
	if os.Getenv("NOVACRON_E2E") != "1" {
		t.Skip("end-to-end: run `make test-e2e` (builds and starts `novacron dev`)")
	}
	d := startDev(t)

	// Create a Virtual Machine.
	assert.Contains(t, d.kubectl(t, "kubectl apply -f manifests/samples/vm-basic.yaml"), "virtualmachine.novacron.io/my-vm created")
	d.waitPhase(t, "my-vm", "Running")

	// List, describe.
	for _, line := range []string{"kubectl get virtualmachines", "kubectl get vm"} {
		out := d.kubectl(t, line)
		assert.Regexp(t, `my-vm\s+true\s+Running\s+\S+`, out, line)
	}
	describe := d.kubectl(t, "kubectl describe vm my-vm")
	assert.Contains(t, describe, "Events:")
	for _, reason := range []string{"LauncherPodCreated", "Scheduled", "Started"} {
		assert.Contains(t, describe, reason, "kubectl describe vm my-vm shows the %s event", reason)
	}

	// Watch while stopping and starting.
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	watch := d.command(watchCtx, "kubectl get vm -w")
	watchOut := &syncBuffer{}
	watch.Stdout, watch.Stderr = watchOut, watchOut
	require.NoError(t, watch.Start())
	// kubectl prints the current state first; patching before that line
	// appears would let the watch begin mid-stop (CI saw it start at Stopping).
	require.Eventually(t, func() bool {
		return regexpCount(watchOut.String(), `my-vm\s+true\s+Running`) >= 1
	}, 30*time.Second, 50*time.Millisecond, "kubectl get vm -w output:\n%s", watchOut.String())
	assert.Contains(t, d.kubectl(t, `kubectl patch vm my-vm --type merge -p '{"spec":{"running":false}}'`), "patched")
	d.waitPhase(t, "my-vm", "Stopped")
	assert.Contains(t, d.kubectl(t, "kubectl get pods"), "No resources found", "a stopped VM's launcher pod is gone")
	assert.Contains(t, d.kubectl(t, `kubectl patch vm my-vm --type merge -p '{"spec":{"running":true}}'`), "patched")
	d.waitPhase(t, "my-vm", "Running")
	// The watch saw the phases change as they happened.
	require.Eventually(t, func() bool {
		return regexpCount(watchOut.String(), `my-vm\s+true\s+Running`) >= 2
	}, 30*time.Second, 50*time.Millisecond, "kubectl get vm -w output:\n%s", watchOut.String())
	w := watchOut.String()
	assert.Regexp(t, `my-vm\s+false\s+Stopping`, w)
	assert.Regexp(t, `my-vm\s+false\s+Stopped`, w)
	stopWatch()
	_ = watch.Wait()

	// Snapshots: take one, restore to it (the restore stops and restarts
	// the VM), and a scheduled policy shows its next run.
	assert.Contains(t, d.kubectl(t, "kubectl apply -f manifests/samples/snapshot.yaml"), "my-vm-before-upgrade created")
	d.kubectl(t, "kubectl wait --for=jsonpath='{.status.phase}'=Ready vmsnap/my-vm-before-upgrade --timeout=60s")
	assert.Regexp(t, `my-vm-before-upgrade\s+my-vm\s+Ready\s+true\s+CrashConsistent`, d.kubectl(t, "kubectl get vmsnap"))
	assert.Contains(t, d.kubectl(t, "kubectl apply -f manifests/samples/restore.yaml"), "my-vm-rollback created")
	d.kubectl(t, "kubectl wait --for=jsonpath='{.status.phase}'=Succeeded vmrestore/my-vm-rollback --timeout=60s")
	d.waitPhase(t, "my-vm", "Running")
	d.kubectl(t, "kubectl apply -f manifests/samples/vm-snapshot-policy.yaml")
	d.kubectl(t, "kubectl wait --for=jsonpath='{.status.snapshot.nextScheduleTime}' vm/my-vm-snapshotted --timeout=60s")

	// Live migration: the test driver cannot migrate, and the migration
	// says so, leaving the VM where it runs.
	d.kubectl(t, "kubectl apply -f manifests/samples/vm-live-migration.yaml")
	d.waitPhase(t, "my-vm-migratable", "Running")
	node := d.kubectl(t, "kubectl get vm my-vm-migratable -o jsonpath='{.status.nodeName}'")
	d.kubectl(t, "kubectl apply -f manifests/samples/migration.yaml")
	d.kubectl(t, "kubectl wait --for=jsonpath='{.status.phase}'=Failed vmim/my-vm-migratable-move --timeout=60s")
	assert.Contains(t, d.kubectl(t, "kubectl describe vmim my-vm-migratable-move"), "not supported")
	d.waitPhase(t, "my-vm-migratable", "Running")
	assert.Equal(t, node, d.kubectl(t, "kubectl get vm my-vm-migratable -o jsonpath='{.status.nodeName}'"))

	// GPU and multiple NICs land on the nodes that have the devices.
	d.kubectl(t, "kubectl apply -f manifests/samples/vm-gpu.yaml")
	d.kubectl(t, "kubectl apply -f manifests/samples/vm-multi-nic.yaml")
	d.kubectl(t, "kubectl apply -f manifests/samples/vm-node-affinity.yaml")
	d.waitPhase(t, "gpu-vm", "Running")
	d.waitPhase(t, "multi-nic-vm", "Running")
	d.waitPhase(t, "affinity-vm", "Running")
	// Only gpu-1 has the labels the seed's affinity example asks for.
	assert.Equal(t, "gpu-1", d.kubectl(t, "kubectl get vm affinity-vm -o jsonpath='{.status.nodeName}'"))
	assert.Equal(t, "gpu-1", d.kubectl(t, "kubectl get vm gpu-vm -o jsonpath='{.status.nodeName}'"))
	assert.Contains(t, d.kubectl(t, "kubectl get vm gpu-vm -o jsonpath='{.status.devices}'"), "tesla-t4")
	assert.Equal(t, "sriov-1", d.kubectl(t, "kubectl get vm multi-nic-vm -o jsonpath='{.status.nodeName}'"))

	d.waitEvents(t, "my-vm", "Stopping", "Stopped", "Started", "SnapshotTaken", "Restored")

	// Delete: the operator removes the domain and says so.
	assert.Contains(t, d.kubectl(t, "kubectl delete vm my-vm"), `virtualmachine.novacron.io "my-vm" deleted`)
	d.waitEvents(t, "my-vm", "removed domain default_my-vm and its disks from node")
	assert.NotContains(t, d.kubectl(t, "kubectl get vm"), "my-vm ")

	// Monitoring: the operator's metrics count the VMs left by phase.
	resp := d.kubectl(t, "curl -sf http://"+d.metrics+"/metrics")
	assert.Contains(t, resp, `novacron_vm_total{phase="Running"} 5`)
	assert.Contains(t, resp, "novacron_snapshot_duration_seconds_count 1")

	d.stop(t)
	files, procs := leftovers(t, d.tmp)
	assert.Empty(t, files, "novacron dev left files in its TMPDIR")
	assert.Empty(t, procs, "novacron dev left processes running")
	assert.Contains(t, d.out.String(), "novacron dev: stopped")
}

func regexpCount(s, re string) int {
	return len(regexp.MustCompile(re).FindAllStringIndex(s, -1))
}
