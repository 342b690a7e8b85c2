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
// so the test can check afterwards that nothing was left behind; args are
// added to its command line.
func startDev(t *testing.T, args ...string) *dev {
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
	d.cmd = exec.Command(bin, append([]string{"dev", "--metrics-bind-address", d.metrics}, args...)...)
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
			if !ok {
				// Wait copies the rest of what it wrote to stderr: its error.
				err := d.cmd.Wait()
				t.Fatalf("novacron dev exited (%v) before it was ready:\n%s", err, d.out.String())
			}
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

// run runs a README command line and returns its standard output and error.
func (d *dev) run(t *testing.T, line string) (stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	cmd := d.command(ctx, line)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	require.NoError(t, cmd.Run(), "%s:\n%s%s", line, out.String(), errOut.String())
	return out.String(), errOut.String()
}

// watch runs a watch command until a line of its output matches until.
func (d *dev) watch(t *testing.T, line string, until *regexp.Regexp) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := d.command(ctx, line)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	defer func() {
		cancel()
		_ = cmd.Wait()
	}()
	for !until.MatchString(out.String()) {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: no line matching %q within 2 minutes:\n%s", line, until, out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return out.String()
}

func isWatch(line string) bool {
	return slices.Contains(strings.Fields(line), "-w") || slices.Contains(strings.Fields(line), "--watch")
}

// check is what a README command's output must show. A check of a command
// that only reads (get, describe, curl) runs it again until it holds:
// controllers and events trail the change that brings them.
type check func(t *testing.T, d *dev, out string) bool

func contains(texts ...string) check {
	return func(_ *testing.T, _ *dev, out string) bool {
		return !slices.ContainsFunc(texts, func(s string) bool { return !strings.Contains(out, s) })
	}
}

func matches(res ...string) check {
	return func(_ *testing.T, _ *dev, out string) bool {
		return !slices.ContainsFunc(res, func(re string) bool { return !regexp.MustCompile(re).MatchString(out) })
	}
}

func readOnly(line string) bool {
	for _, p := range []string{"kubectl get ", "kubectl describe ", "kubectl -n gpu-team get ", "curl "} {
		if strings.HasPrefix(line, p) {
			return true
		}
	}
	return false
}

// readmeChecks are what the README's commands must show, by command line as
// written there, in the order they run (a line run twice has two).
func readmeChecks() map[string][]check {
	running := func(vm, node string) check { return matches(vm + `\s+true\s+Running\s+` + node) }
	return map[string][]check{
		"kubectl version": {func(t *testing.T, _ *dev, out string) bool {
			client := regexp.MustCompile(`Client Version: (v1\.\d+\.\d+)`).FindStringSubmatch(out)
			server := regexp.MustCompile(`Server Version: (v1\.\d+\.\d+)`).FindStringSubmatch(out)
			return assert.NotNil(t, client, out) && assert.NotNil(t, server, out) && assert.Equal(t, client[1], server[1])
		}},
		"kubectl get nodes": {matches(`compute-1\s+Ready\s+\S+\s+\S+\s+v1\.\d+\.\d+`, `gpu-1\s+Ready\s+\S+\s+\S+\s+v1\.\d+\.\d+`, `sriov-1\s+Ready`)},
		"kubectl get hv":    {matches(`compute-1\s+\S+\s+True\s+Icelake-Server`, `gpu-1\s+\S+\s+True`, `sriov-1\s+\S+\s+True`)},
		"kubectl apply -f manifests/samples/vm-basic.yaml": {contains("virtualmachine.novacron.io/my-vm created")},
		"kubectl get virtualmachines":                      {running("my-vm", `\S+`)},
		"kubectl get vm":                                   {running("my-vm", `\S+`)},
		"kubectl get vm -o wide":                           {matches(`my-vm\s+true\s+Running\s+(compute-1|gpu-1|sriov-1)`, `\s2\s+4Gi\s+marketplace://ubuntu-22.04-lts\s+Running\n`)},
		"kubectl describe vm my-vm":                        {contains("Events:", "LauncherPodCreated", "Scheduled", "Started")},
		"kubectl get events --field-selector involvedObject.name=my-vm": {
			contains("LauncherPodCreated", "Defined", "Started"),
			contains("Stopping", "Stopped", "SnapshotTaken", "Restored", "removed domain default_my-vm and its disks from node"),
		},
		"kubectl get vm -w": {running("my-vm", `\S+`)},
		"kubectl wait vm/my-vm --for=jsonpath='{.status.phase}'=Stopped --timeout=2m": {func(t *testing.T, d *dev, _ string) bool {
			return contains("No resources found")(t, d, d.kubectl(t, "kubectl get pods -l novacron.io/vm=my-vm"))
		}},
		"kubectl -n gpu-team get vm gpu-vm -o wide":                                                       {matches(`gpu-vm\s+true\s+Running\s+gpu-1\s.*tesla-t4`)},
		"kubectl get vm multi-nic-vm -o jsonpath='{.status.nodeName} {.status.interfaces}'":               {matches(`^sriov-1 .*"pciAddress":"0000:`)},
		`kubectl get vm cloud-init-vm -o jsonpath='{.status.conditions[?(@.type=="CloudInit")].message}'`: {contains("cannot receive the cloud-init disk")},
		"kubectl get vm affinity-vm": {running("affinity-vm", "gpu-1")},
		"kubectl get vmsnap":         {matches(`my-vm-before-upgrade\s+my-vm\s+Ready\s+true\s+CrashConsistent`)},
		"kubectl get vmrestore":      {matches(`my-vm-rollback\s+my-vm\s+my-vm-before-upgrade\s+Succeeded`)},
		"kubectl get vm my-vm-snapshotted -o jsonpath='{.status.snapshot}'": {contains(`"nextScheduleTime"`)},
		"kubectl describe vmim my-vm-migratable-move":                       {contains("Failed", "not supported")},
		"kubectl get hv compute-1 -o jsonpath='{.status.evacuationPlan}'":   {contains(`"plannedAt"`, `"vms"`)},
		"kubectl get hv compute-1 -o jsonpath='{.status.evacuation}'":       {contains(`"reason":"Cordoned"`)},
		"kubectl uncordon compute-1": {func(t *testing.T, d *dev, _ string) bool {
			return assert.Eventually(t, func() bool {
				return d.kubectl(t, "kubectl get hv compute-1 -o jsonpath='{.status.evacuation}'") == ""
			}, time.Minute, 200*time.Millisecond, "no longer evacuated")
		}},
		`curl -sk -H "Authorization: Bearer $(kubectl create token prometheus)" https://127.0.0.1:8080/metrics | grep ^novacron_vm_total`: {func(t *testing.T, d *dev, out string) bool {
			n := strings.Count(d.kubectl(t, "kubectl get vm -A --no-headers"), " Running ")
			return strings.Contains(out, fmt.Sprintf(`novacron_vm_total{phase="Running"} %d`, n))
		}},
		"kubectl delete vm my-vm": {contains(`virtualmachine.novacron.io "my-vm" deleted`)},
	}
}

// TestReadmeWorkflow runs the "Using NovaCron" section of README.md, as a
// newcomer would, against `novacron dev`.
func TestReadmeWorkflow(t *testing.T) {
	if os.Getenv("NOVACRON_E2E") != "1" {
		t.Skip("end-to-end: run `make test-e2e` (builds and starts `novacron dev`)")
	}
	d := startDev(t)
	d.readme(t, readme{
		checks:  readmeChecks(),
		notHere: []string{"cluster", "lab"},
		rewrite: func(line string) string { return strings.ReplaceAll(line, "127.0.0.1:8080", d.metrics) },
	})
	assert.Contains(t, d.kubectl(t, "kubectl get events -A --field-selector reason=PolicyDryRun"), "No resources found",
		"nor a policy's dry-run event")

	d.stop(t)
	files, procs := leftovers(t, d.tmp)
	assert.Empty(t, files, "novacron dev left files in its TMPDIR")
	assert.Empty(t, procs, "novacron dev left processes running")
	assert.Contains(t, d.out.String(), "novacron dev: stopped")
}

// readme is how the README's workflow runs against one kind of dev
// environment.
type readme struct {
	checks map[string][]check
	// notHere are the markers of blocks this environment cannot run.
	notHere []string
	// rewrite turns a README line into the command run here (an address).
	rewrite func(line string) string
	// before runs ahead of each README line that starts with its key (the
	// command without the README's trailing comment), for what a user would
	// wait for without a command in the README (a real guest to boot).
	before map[string]func()
}

// readme runs the sh blocks of README.md's "Using NovaCron" section in order
// and checks what each command printed.
func (d *dev) readme(t *testing.T, r readme) {
	t.Helper()
	blocks := usingNovaCron(t)
	checks := r.checks
	var warnings []string
	for _, b := range blocks {
		if slices.Contains(r.notHere, b.skip) {
			t.Logf("README.md:%d: needs a %s, not run here", b.line, b.skip)
			for _, line := range b.lines {
				delete(checks, line)
			}
			continue
		}
		for _, line := range b.lines {
			for prefix, f := range r.before {
				if strings.HasPrefix(line, prefix) {
					f()
				}
			}
			cmd := r.rewrite(line)
			var out string
			if isWatch(cmd) {
				require.NotNil(t, b.until, "README.md:%d: a watch needs an <!-- e2e: until REGEX --> before its block", b.line)
				out = d.watch(t, cmd, b.until)
			} else {
				var stderr string
				out, stderr = d.run(t, cmd)
				if strings.Contains(stderr, "Warning:") {
					warnings = append(warnings, line+": "+stderr)
				}
			}
			queue := checks[line]
			if len(queue) == 0 {
				continue
			}
			c := queue[0]
			checks[line] = queue[1:]
			deadline := time.Now().Add(time.Minute)
			for !c(t, d, out) {
				if !readOnly(line) || time.Now().After(deadline) {
					t.Fatalf("README.md:%d: %s printed:\n%s", b.line, line, out)
				}
				time.Sleep(200 * time.Millisecond)
				out, _ = d.run(t, cmd)
			}
		}
	}
	for line, left := range checks {
		assert.Empty(t, left, "the README no longer runs %q", line)
	}
	assert.Empty(t, warnings, "the product's own samples draw no warning")
}
