// Package lab runs the VM lifecycle against a real libvirtd + QEMU node from
// the hypervisor lab (lab.sh): the guest really boots, powers off on ACPI, and
// is deleted. It needs root and runs when NOVACRON_LAB=1 (`make test-lab`).
package lab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kdomanski/iso9660"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"libvirt.org/go/libvirtxml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/devenv"
	"github.com/novacron/operator/operator/domain"
	"github.com/novacron/operator/operator/manager"
	"github.com/novacron/operator/operator/provider"
	"github.com/novacron/operator/operator/provider/libvirt"
	"github.com/novacron/operator/test/testenv"
)

const node = "lab-node-1"

// labDir is where lab.sh keeps its nodes (NOVACRON_LAB_DIR, as lab.sh reads it).
func labDir() string {
	if d := os.Getenv("NOVACRON_LAB_DIR"); d != "" {
		return d
	}
	return "/var/tmp/novacron-lab"
}

func labSh(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("./lab.sh", args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("lab.sh %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return strings.TrimSpace(out.String())
}

// serialLog is the guest's serial console as written on the node.
func serialLog(dom string) string { return serialLogOn(node, dom) }

func serialLogOn(n, dom string) string {
	b, _ := os.ReadFile(filepath.Join(labDir(), "nodes", n, "log", "qemu", dom+"-serial.log"))
	return string(b)
}

func waitLog(t *testing.T, dom string, timeout time.Duration, what string, ok func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if l := serialLog(dom); ok(l) {
			return l
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("guest %s: timed out waiting for %s; serial log:\n%s", dom, what, serialLog(dom))
	return ""
}

func virsh(t *testing.T, uri string, args ...string) string {
	t.Helper()
	out, err := exec.Command("virsh", append([]string{"-c", uri}, args...)...).CombinedOutput()
	require.NoError(t, err, string(out))
	return string(out)
}

// installLabCatalog makes the operator's namespace with an image catalog of
// the lab guest (lab.sh stages its volumes on every node).
func installLabCatalog(t *testing.T, env *testenv.Env) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "novacron-system"}}))
	require.NoError(t, env.Client.Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: domain.CatalogConfigMap, Namespace: "novacron-system"},
		Data:       map[string]string{"lab-guest": devenv.LabGuestImage},
	}))
}

// labGuestVM is a VM of the lab guest: 128 MiB, a 64 MiB qcow2 root disk.
func labGuestVM(name string) *novacronv1.VirtualMachine {
	return &novacronv1.VirtualMachine{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: novacronv1.VirtualMachineSpec{Running: ptr.To(true), Template: novacronv1.VirtualMachineTemplateSpec{Spec: novacronv1.VirtualMachineInstanceSpec{
			Resources: novacronv1.VMResources{CPU: 1, Memory: resource.MustParse("128Mi"), Disk: ptr.To(resource.MustParse("64Mi"))},
			Image:     novacronv1.ImageSource{Source: "marketplace://lab-guest"},
		}}},
	}
}

// needLab skips tests that need the hypervisor lab unless it was asked for.
func needLab(t *testing.T) {
	t.Helper()
	if os.Getenv("NOVACRON_LAB") != "1" {
		t.Skip("needs the hypervisor lab (root, libvirtd, QEMU): run `make test-lab`, or set NOVACRON_LAB=1")
	}
}

// startLab starts the lab node, an API server with the lab guest in the image
// catalog and the node's Hypervisor, and the operator.
func startLab(t *testing.T) (*testenv.Env, *libvirt.Connector, string, manager.Options) {
	t.Helper()
	testenv.SetLogger()
	labSh(t, "install")
	labSh(t, "guest")
	uri := labSh(t, "start", node)
	t.Cleanup(func() { labSh(t, "stop", node) })

	env, err := testenv.Start()
	require.NoError(t, err)
	t.Cleanup(func() { _ = env.Stop() })
	ctx := context.Background()
	installLabCatalog(t, env)
	require.NoError(t, env.Client.Create(ctx, &novacronv1.Hypervisor{
		ObjectMeta: metav1.ObjectMeta{Name: node},
		// The lab runs guests under TCG, as the CI machines have no working KVM.
		Spec: novacronv1.HypervisorSpec{URI: uri, StoragePool: "default", DomainType: "qemu"},
	}))

	connector := libvirt.NewConnector(libvirt.URIRules{TCP: true, Local: true})
	t.Cleanup(connector.Close)
	opts := manager.DefaultOptions()
	opts.MetricsAddr, opts.ProbeAddr = "0", "0"
	opts.StopGracePeriod = 30 * time.Second
	opts.Webhooks = false
	env.StartOperator(t, opts, connector)
	return env, connector, uri, opts
}

func TestRealQEMULifecycle(t *testing.T) {
	needLab(t)
	env, connector, uri, opts := startLab(t)
	ctx := context.Background()

	v := labGuestVM("lab-vm")
	key := client.ObjectKeyFromObject(v)
	start := time.Now()
	require.NoError(t, env.Client.Create(ctx, v))
	env.Bind(t, key, node, nil, time.Minute)
	running := env.WaitVM(t, key, 2*time.Minute, "phase Running", testenv.PhaseIs(novacronv1.VMRunning))
	toRunning := time.Since(start)
	dom := domain.DomainName(running)
	boot := waitLog(t, dom, time.Minute, "the guest to boot and tick", func(l string) bool {
		return strings.Contains(l, "NOVACRON-GUEST-BOOT") && strings.Contains(l, "NOVACRON-TICK")
	})
	t.Logf("create to Running (real QEMU/TCG): %s; to first guest tick: %s", toRunning.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	assert.Equal(t, 1, strings.Count(boot, "NOVACRON-GUEST-BOOT"))

	hv, err := connector.Hypervisor(ctx, uri)
	require.NoError(t, err)
	// The cloud-init disk was uploaded to the node and is the domain's CD-ROM.
	assert.True(t, meta.IsStatusConditionTrue(running.Status.Conditions, novacronv1.VMConditionCloudInit))
	isoPath := filepath.Join(labDir(), "nodes", node, "lib", "images", domain.CloudInitVolumeName(running))
	raw, err := os.ReadFile(isoPath)
	require.NoError(t, err)
	img, err := iso9660.OpenImage(bytes.NewReader(raw))
	require.NoError(t, err)
	label, _ := img.Label()
	assert.Equal(t, "cidata", label)
	xml := virsh(t, uri, "dumpxml", dom)
	assert.Contains(t, xml, "/var/lib/libvirt/images/"+domain.CloudInitVolumeName(running))
	assert.Contains(t, xml, `device='cdrom'`)

	// Graceful stop: the guest sees the ACPI power button and powers itself off,
	// well before the operator would force it.
	stopAt := time.Now()
	env.PatchRunning(t, key, false)
	env.WaitVM(t, key, time.Minute, "phase Stopped", testenv.PhaseIs(novacronv1.VMStopped))
	assert.Less(t, time.Since(stopAt), opts.StopGracePeriod, "the guest should power off on ACPI, not be forced")
	assert.Contains(t, serialLog(dom), "NOVACRON-GUEST-POWEROFF")
	st, err := hv.State(ctx, dom)
	require.NoError(t, err)
	assert.Equal(t, provider.StateShutoff, st)

	env.PatchRunning(t, key, true)
	env.Bind(t, key, node, nil, time.Minute)
	env.WaitVM(t, key, 2*time.Minute, "phase Running again", testenv.PhaseIs(novacronv1.VMRunning))
	waitLog(t, dom, time.Minute, "a second boot", func(l string) bool {
		i := strings.LastIndex(l, "NOVACRON-GUEST-BOOT")
		return strings.Count(l, "NOVACRON-GUEST-BOOT") == 2 && strings.Contains(l[i:], "NOVACRON-TICK")
	})

	env.DeleteVMAndWait(t, key, 2*time.Minute)
	_, err = hv.State(ctx, dom)
	assert.ErrorIs(t, err, provider.ErrNotFound, "delete removes the domain")
	_, err = hv.VolumePath(ctx, "default", domain.RootVolumeName(running))
	assert.ErrorIs(t, err, provider.ErrNotFound, "delete removes the VM's disk")
	_, err = hv.VolumePath(ctx, "default", domain.CloudInitVolumeName(running))
	assert.ErrorIs(t, err, provider.ErrNotFound, "delete removes the VM's cloud-init disk")
}

// ticks are the guest's uptimes, in order, from its NOVACRON-TICK lines.
func ticks(log string) []float64 {
	var out []float64
	for _, line := range strings.Split(log, "\n") {
		var up float64
		if i := strings.Index(line, "NOVACRON-TICK "); i >= 0 {
			if _, err := fmt.Sscan(line[i+len("NOVACRON-TICK "):], &up); err == nil {
				out = append(out, up)
			}
		}
	}
	return out
}

func lastTick(log string) float64 {
	if t := ticks(log); len(t) > 0 {
		return t[len(t)-1]
	}
	return 0
}

// A running guest is snapshotted with its memory, runs on, and is restored:
// it resumes where the snapshot was (its uptime goes back, no new boot).
func TestRealQEMUSnapshotRestore(t *testing.T) {
	needLab(t)
	env, _, uri, _ := startLab(t)
	ctx := context.Background()
	v := labGuestVM("snap-vm")
	key := client.ObjectKeyFromObject(v)
	require.NoError(t, env.Client.Create(ctx, v))
	env.Bind(t, key, node, nil, time.Minute)
	env.WaitVM(t, key, 2*time.Minute, "phase Running", testenv.PhaseIs(novacronv1.VMRunning))
	dom := domain.DomainName(v)
	waitLog(t, dom, time.Minute, "the guest to tick past 4 s", func(l string) bool { return lastTick(l) >= 4 })

	snap := &novacronv1.VirtualMachineSnapshot{ObjectMeta: metav1.ObjectMeta{Name: "lab-snap", Namespace: "default"},
		Spec: novacronv1.VirtualMachineSnapshotSpec{VMName: v.Name}}
	require.NoError(t, env.Client.Create(ctx, snap))
	require.Eventually(t, func() bool {
		return env.Client.Get(ctx, client.ObjectKeyFromObject(snap), snap) == nil && snap.Status.Phase == novacronv1.SnapshotReady
	}, time.Minute, 100*time.Millisecond, "snapshot Ready")
	atSnapshot := lastTick(serialLog(dom))
	assert.True(t, snap.Status.IncludesMemory)
	assert.Contains(t, virsh(t, uri, "snapshot-list", dom, "--name"), "lab-snap")

	// Let it run on well past the snapshot, then restore.
	before := waitLog(t, dom, time.Minute, "the guest to run on", func(l string) bool { return lastTick(l) >= atSnapshot+6 })
	boots := strings.Count(before, "NOVACRON-GUEST-BOOT")
	latest := lastTick(before)
	restore := &novacronv1.VirtualMachineRestore{ObjectMeta: metav1.ObjectMeta{Name: "lab-rollback", Namespace: "default"},
		Spec: novacronv1.VirtualMachineRestoreSpec{VMName: v.Name, SnapshotName: snap.Name, StopVM: true}}
	require.NoError(t, env.Client.Create(ctx, restore))
	require.Eventually(t, func() bool {
		return env.Client.Get(ctx, client.ObjectKeyFromObject(restore), restore) == nil && restore.Status.Phase == novacronv1.RestoreSucceeded
	}, 2*time.Minute, 100*time.Millisecond, "restore Succeeded")
	env.Bind(t, key, node, nil, time.Minute)
	env.WaitVM(t, key, time.Minute, "Running after the restore", testenv.PhaseIs(novacronv1.VMRunning))

	// The guest resumed from the snapshot's memory: its uptime went back to
	// about where it was then, without booting again.
	// The restore stopped the guest (it logs its power-off); what it
	// printed since then comes from the restored memory.
	sincePowerOff := func(l string) string {
		if i := strings.LastIndex(l, "NOVACRON-GUEST-POWEROFF"); i >= 0 {
			return l[i:]
		}
		return ""
	}
	after := waitLog(t, dom, time.Minute, "ticks after the restore", func(l string) bool { return len(ticks(sincePowerOff(l))) >= 2 })
	resumed := ticks(sincePowerOff(after))
	t.Logf("guest uptime: %.2f s at the snapshot, %.2f s before the restore, then %.2f s, %.2f s", atSnapshot, latest, resumed[0], resumed[1])
	assert.Less(t, resumed[0], latest, "the tick counter went back")
	assert.Greater(t, resumed[0], atSnapshot, "to just after the snapshot (ticks come every 2 s)")
	assert.LessOrEqual(t, resumed[0], atSnapshot+4)
	assert.Equal(t, boots, strings.Count(after, "NOVACRON-GUEST-BOOT"), "resumed, not rebooted")

	require.NoError(t, env.Client.Delete(ctx, snap))
	require.Eventually(t, func() bool {
		return apierrors.IsNotFound(env.Client.Get(ctx, client.ObjectKeyFromObject(snap), snap))
	}, time.Minute, 100*time.Millisecond, "snapshot deleted")
	assert.NotContains(t, virsh(t, uri, "snapshot-list", dom, "--name"), "lab-snap", "its hypervisor snapshot is gone")
	env.DeleteVMAndWait(t, key, 2*time.Minute)
}

// bindTarget binds the migration's target pod to node, as the scheduler would.
func bindTarget(t *testing.T, env *testenv.Env, mig, node string) {
	t.Helper()
	var pods corev1.PodList
	require.Eventually(t, func() bool {
		return env.Client.List(context.Background(), &pods, client.InNamespace("default"), client.MatchingLabels{novacronv1.LabelMigration: mig}) == nil && len(pods.Items) == 1
	}, time.Minute, 10*time.Millisecond, "the target pod of %s", mig)
	cs, err := kubernetes.NewForConfig(env.Config)
	require.NoError(t, err)
	require.NoError(t, cs.CoreV1().Pods("default").Bind(context.Background(), &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pods.Items[0].Name, Namespace: "default"},
		Target:     corev1.ObjectReference{Kind: "Node", Name: node},
	}, metav1.CreateOptions{}))
}

func migrateTo(t *testing.T, env *testenv.Env, vmName, name, node string) *novacronv1.VirtualMachineMigration {
	t.Helper()
	ctx := context.Background()
	m := &novacronv1.VirtualMachineMigration{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: novacronv1.VirtualMachineMigrationSpec{VMName: vmName}}
	require.NoError(t, env.Client.Create(ctx, m))
	bindTarget(t, env, name, node)
	require.Eventually(t, func() bool {
		return env.Client.Get(ctx, client.ObjectKeyFromObject(m), m) == nil && m.Status.Phase.Done()
	}, 2*time.Minute, 20*time.Millisecond, "migration %s to end", name)
	return m
}

// Two lab nodes in their own network namespaces: a VM created through the
// API moves live from one to the other and back, its guest never rebooting.
func TestRealQEMULiveMigration(t *testing.T) {
	needLab(t)
	testenv.SetLogger()
	began := time.Now()
	step := func(what string) { t.Logf("%6.1fs %s", time.Since(began).Seconds(), what) }
	labSh(t, "install")
	labSh(t, "guest")
	nodes := map[string]string{"lab-m1": "10.200.0.1", "lab-m2": "10.200.0.2"}
	env, err := testenv.Start()
	require.NoError(t, err)
	t.Cleanup(func() { _ = env.Stop() })
	ctx := context.Background()
	installLabCatalog(t, env)
	// The operator reaches the nodes over TLS with the lab's client
	// certificate, and the nodes migrate to each other over TLS with their
	// own: the shipped URI rules (TLS only) apply to both.
	clientPKI := labSh(t, "pki")
	for n, ip := range nodes {
		labSh(t, "start", n, ip)
		t.Cleanup(func() { labSh(t, "stop", n) })
		require.NoError(t, env.Client.Create(ctx, &novacronv1.Hypervisor{
			ObjectMeta: metav1.ObjectMeta{Name: n},
			Spec: novacronv1.HypervisorSpec{URI: "qemu+tls://" + ip + "/system?pkipath=" + clientPKI, StoragePool: "default", DomainType: "qemu",
				MigrationURI: "qemu+tls://" + ip + "/system"},
		}))
	}
	connector := libvirt.NewConnector(libvirt.URIRules{})
	t.Cleanup(connector.Close)
	opts := manager.DefaultOptions()
	opts.MetricsAddr, opts.ProbeAddr, opts.Webhooks = "0", "0", false
	opts.StopGracePeriod = 30 * time.Second
	opts.MigrationPoll = 200 * time.Millisecond
	stopOperator, _, err := env.RunOperator(opts, connector)
	require.NoError(t, err)
	t.Cleanup(func() { stopOperator() })

	v := labGuestVM("mover")
	// Encrypted: QEMU's own migration stream goes over TLS too.
	v.Spec.MigrationPolicy = &novacronv1.MigrationPolicy{AllowLiveMigration: true, Encrypted: true}
	key := client.ObjectKeyFromObject(v)
	require.NoError(t, env.Client.Create(ctx, v))
	env.Bind(t, key, "lab-m1", nil, time.Minute)
	env.WaitVM(t, key, 2*time.Minute, "phase Running", testenv.PhaseIs(novacronv1.VMRunning))
	dom := domain.DomainName(v)
	waitLogOn := func(n, what string, ok func(string) bool) string {
		deadline := time.Now().Add(time.Minute)
		for {
			if l := serialLogOn(n, dom); ok(l) {
				return l
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s on %s: timed out; serial log:\n%s", what, n, serialLogOn(n, dom))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitLogOn("lab-m1", "the guest ticking", func(l string) bool { return lastTick(l) >= 4 })
	step("guest booted on lab-m1")

	start := time.Now()
	m := migrateTo(t, env, v.Name, "there", "lab-m2")
	opThere := time.Since(start)
	require.Equal(t, novacronv1.MigrationSucceeded, m.Status.Phase, "%+v", m.Status.Conditions)
	t.Logf("migration lab-m1 -> lab-m2 through the operator: %s (job %d ms, downtime %d ms)", time.Since(start).Round(time.Millisecond),
		m.Status.Progress.ElapsedMilliseconds, m.Status.Progress.DowntimeMilliseconds)
	got := env.WaitVM(t, key, time.Minute, "Running on lab-m2", func(x *novacronv1.VirtualMachine) bool {
		return x.Status.Phase == novacronv1.VMRunning && x.Status.NodeName == "lab-m2"
	})
	assert.Equal(t, m.Status.TargetPod, got.Status.LauncherPod)
	before := lastTick(serialLogOn("lab-m1", dom))
	after := waitLogOn("lab-m2", "ticks on lab-m2", func(l string) bool { return len(ticks(l)) >= 1 })
	assert.NotContains(t, after, "NOVACRON-GUEST-BOOT", "the guest did not boot again on lab-m2")
	assert.GreaterOrEqual(t, ticks(after)[0], before, "its uptime continues")
	assert.Less(t, ticks(after)[0], before+6)
	assert.Contains(t, virsh(t, labSh(t, "uri", "lab-m2"), "list", "--name"), dom)
	assert.NotContains(t, virsh(t, labSh(t, "uri", "lab-m1"), "list", "--all", "--name"), dom, "gone from lab-m1")

	// A target without QEMU's migration certificates: the encrypted migration
	// is refused rather than sent in clear, and the VM stays where it runs.
	qemuPKI := filepath.Join(labDir(), "nodes", "lab-m1", "pki", "qemu")
	require.NoError(t, os.Rename(qemuPKI, qemuPKI+".off"))
	refused := migrateTo(t, env, v.Name, "in-clear", "lab-m1")
	require.NoError(t, os.Rename(qemuPKI+".off", qemuPKI))
	assert.Equal(t, novacronv1.MigrationFailed, refused.Status.Phase)
	assert.Contains(t, meta.FindStatusCondition(refused.Status.Conditions, novacronv1.ConditionReady).Message, "refused rather than sent in clear")
	env.WaitVM(t, key, time.Minute, "still Running on lab-m2", func(x *novacronv1.VirtualMachine) bool {
		return x.Status.Phase == novacronv1.VMRunning && x.Status.NodeName == "lab-m2" && x.Status.MigrationState == nil
	})
	assert.Contains(t, virsh(t, labSh(t, "uri", "lab-m2"), "list", "--name"), dom)
	assert.NotContains(t, virsh(t, labSh(t, "uri", "lab-m1"), "list", "--all", "--name"), dom)
	step("encrypted migration to a node without migration TLS refused")

	// And back.
	start = time.Now()
	m = migrateTo(t, env, v.Name, "back", "lab-m1")
	opBack := time.Since(start)
	require.Equal(t, novacronv1.MigrationSucceeded, m.Status.Phase, "%+v", m.Status.Conditions)
	env.WaitVM(t, key, time.Minute, "Running on lab-m1", func(x *novacronv1.VirtualMachine) bool {
		return x.Status.Phase == novacronv1.VMRunning && x.Status.NodeName == "lab-m1"
	})
	onM2 := lastTick(serialLogOn("lab-m2", dom))
	back := waitLogOn("lab-m1", "ticks on lab-m1 again", func(l string) bool { return lastTick(l) > onM2 })
	assert.Equal(t, 1, strings.Count(back, "NOVACRON-GUEST-BOOT"), "one boot in all")

	// The same guest migrated by bare virsh between the same nodes, for the
	// operator's overhead (figures in test/perf/README.md).
	bare := bareMigrations(t, dom)
	step("bare virsh migrations done")
	t.Logf("BENCH operator there+back %s, bare virsh migrate --live --p2p there+back %s, ratio %.2f",
		(opThere + opBack).Round(time.Millisecond), bare.Round(time.Millisecond), float64(opThere+opBack)/float64(bare))

	// The target's libvirtd dies mid-migration: the VM keeps running on its
	// node and the migration fails, saying why.
	slow := &novacronv1.VirtualMachine{}
	require.NoError(t, env.Client.Get(ctx, key, slow))
	patch := client.MergeFrom(slow.DeepCopy())
	slow.Spec.MigrationPolicy.Bandwidth = "8Mbps" // 1 MiB/s: long enough to interrupt
	require.NoError(t, env.Client.Patch(ctx, slow, patch))
	killed := &novacronv1.VirtualMachineMigration{ObjectMeta: metav1.ObjectMeta{Name: "interrupted", Namespace: "default"},
		Spec: novacronv1.VirtualMachineMigrationSpec{VMName: v.Name}}
	require.NoError(t, env.Client.Create(ctx, killed))
	bindTarget(t, env, killed.Name, "lab-m2")
	require.Eventually(t, func() bool {
		return env.Client.Get(ctx, client.ObjectKeyFromObject(killed), killed) == nil && killed.Status.Progress != nil && killed.Status.Progress.DataProcessedBytes > 0
	}, time.Minute, 50*time.Millisecond, "the migration under way")
	pid, err := os.ReadFile(filepath.Join(labDir(), "nodes", "lab-m2", "run", "libvirtd.pid"))
	require.NoError(t, err)
	killAt := time.Now()
	require.NoError(t, exec.Command("kill", "-9", strings.TrimSpace(string(pid))).Run())
	require.Eventually(t, func() bool {
		return env.Client.Get(ctx, client.ObjectKeyFromObject(killed), killed) == nil && killed.Status.Phase.Done()
	}, 2*time.Minute, 100*time.Millisecond, "the migration to end; last seen %+v", &killed.Status)
	assert.Equal(t, novacronv1.MigrationFailed, killed.Status.Phase)
	t.Logf("target killed; migration %s %s later: %s", killed.Status.Phase, time.Since(killAt).Round(time.Millisecond), meta.FindStatusCondition(killed.Status.Conditions, novacronv1.ConditionReady).Message)
	stayed := env.WaitVM(t, key, time.Minute, "Running on lab-m1", func(x *novacronv1.VirtualMachine) bool {
		return x.Status.Phase == novacronv1.VMRunning && x.Status.MigrationState == nil
	})
	assert.Equal(t, "lab-m1", stayed.Status.NodeName)
	ticking := lastTick(serialLogOn("lab-m1", dom))
	waitLogOn("lab-m1", "the guest ticking on", func(l string) bool { return lastTick(l) > ticking })
	labSh(t, "start", "lab-m2", nodes["lab-m2"]) // back, empty
	step("lab-m2 restarted")

	// The operator restarts mid-migration (lab-m2 restarted, as after an
	// outage): the source's libvirtd carries on, the new operator follows it
	// to its end, and the guest runs on exactly one node.
	require.NoError(t, env.Client.Get(ctx, key, slow))
	patch = client.MergeFrom(slow.DeepCopy())
	slow.Spec.MigrationPolicy.Bandwidth = "80Mbps" // 10 MiB/s: over 10 s, time to restart
	require.NoError(t, env.Client.Patch(ctx, slow, patch))
	restartAt := time.Now()
	resumed := &novacronv1.VirtualMachineMigration{ObjectMeta: metav1.ObjectMeta{Name: "resumed", Namespace: "default"},
		Spec: novacronv1.VirtualMachineMigrationSpec{VMName: v.Name}}
	require.NoError(t, env.Client.Create(ctx, resumed))
	bindTarget(t, env, resumed.Name, "lab-m2")
	// Under way on the source's libvirtd (data moving), not merely recorded:
	// the new operator has a job to follow.
	require.Eventually(t, func() bool {
		return env.Client.Get(ctx, client.ObjectKeyFromObject(resumed), resumed) == nil && resumed.Status.Progress != nil && resumed.Status.Progress.DataProcessedBytes > 0
	}, time.Minute, 20*time.Millisecond, "the migration under way")
	stopOperator()
	stopOperator, _, err = env.RunOperator(opts, connector)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return env.Client.Get(ctx, client.ObjectKeyFromObject(resumed), resumed) == nil && resumed.Status.Phase.Done()
	}, 2*time.Minute, 100*time.Millisecond, "the migration to end")
	final := env.WaitVM(t, key, time.Minute, "Running", func(x *novacronv1.VirtualMachine) bool {
		return x.Status.Phase == novacronv1.VMRunning && x.Status.MigrationState == nil
	})
	assert.Equal(t, novacronv1.MigrationSucceeded, resumed.Status.Phase, "%+v", resumed.Status.Conditions)
	t.Logf("after the restart: migration %s (%s) in %s, VM on %s", resumed.Status.Phase,
		meta.FindStatusCondition(resumed.Status.Conditions, novacronv1.ConditionReady).Message, time.Since(restartAt).Round(time.Millisecond), final.Status.NodeName)
	running := 0
	for _, n := range []string{"lab-m1", "lab-m2"} {
		if strings.Contains(virsh(t, labSh(t, "uri", n), "list", "--name"), dom) {
			running++
			assert.Equal(t, n, final.Status.NodeName, "it runs where its status says")
		}
	}
	assert.Equal(t, 1, running, "the guest runs on exactly one node")
	step("restart case done")
	env.DeleteVMAndWait(t, key, 2*time.Minute)
}

// bareMigrations defines a copy of the guest by hand on lab-m1 and times
// `virsh migrate --live --p2p` of it to lab-m2 and back, with the flags the
// operator uses.
func bareMigrations(t *testing.T, dom string) time.Duration {
	t.Helper()
	m1, m2 := labSh(t, "uri", "lab-m1"), labSh(t, "uri", "lab-m2")
	x := virsh(t, m1, "dumpxml", dom)
	var d libvirtxml.Domain
	require.NoError(t, d.Unmarshal(x))
	d.Name, d.UUID = "bare-bench", ""
	var disks []libvirtxml.DomainDisk
	for _, disk := range d.Devices.Disks {
		if disk.Device == "disk" {
			disk.Source.File.File = "/var/lib/libvirt/images/bare-bench-root.qcow2"
			disks = append(disks, disk)
		}
	}
	d.Devices.Disks = disks
	for i := range d.Devices.Serials {
		if f := d.Devices.Serials[i].Source; f != nil && f.File != nil {
			f.File.Path = "/var/log/libvirt/qemu/bare-bench-serial.log"
		}
	}
	for i := range d.Devices.Consoles {
		if f := d.Devices.Consoles[i].Source; f != nil && f.File != nil {
			f.File.Path = "/var/log/libvirt/qemu/bare-bench-serial.log"
		}
	}
	doc, err := d.Marshal()
	require.NoError(t, err)
	file := filepath.Join(t.TempDir(), "bare.xml")
	require.NoError(t, os.WriteFile(file, []byte(doc), 0o644))
	for _, u := range []string{m1, m2} {
		virsh(t, u, "vol-create-as", "default", "bare-bench-root.qcow2", "64M", "--format", "qcow2", "--backing-vol", "lab-guest.qcow2", "--backing-vol-format", "qcow2")
	}
	virsh(t, m1, "define", file)
	virsh(t, m1, "start", "bare-bench")
	waitLogOn := func() {
		deadline := time.Now().Add(time.Minute)
		for lastTick(serialLogOn("lab-m1", "bare-bench")) < 4 && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitLogOn()
	flags := []string{"--live", "--p2p", "--persistent", "--undefinesource", "--copy-storage-inc", "--auto-converge"}
	start := time.Now()
	virsh(t, m1, append(append([]string{"migrate"}, flags...), "bare-bench", "qemu+tcp://10.200.0.2/system")...)
	virsh(t, m2, append(append([]string{"migrate"}, flags...), "bare-bench", "qemu+tcp://10.200.0.1/system")...)
	took := time.Since(start)
	virsh(t, m1, "destroy", "bare-bench")
	virsh(t, m1, "undefine", "bare-bench")
	return took
}
