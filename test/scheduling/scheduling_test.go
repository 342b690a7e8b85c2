package scheduling

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/devices"
	"github.com/novacron/operator/operator/domain"
	"github.com/novacron/operator/operator/provider"
	"github.com/novacron/operator/test/testenv"
)

const timeout = 60 * time.Second

func newVM(ns, name string, cpu int32) *novacronv1.VirtualMachine {
	v := testenv.NewVM(ns, name, cpu, "1Gi")
	v.Spec.Template.Spec.SchedulerName = "novacron-scheduler"
	return v
}

func gpuVM(ns, name string) *novacronv1.VirtualMachine {
	v := newVM(ns, name, 2)
	v.Spec.Template.Spec.Devices = []novacronv1.Device{{Type: novacronv1.DeviceTypeGPU, Vendor: "nvidia", Model: "tesla-t4", Count: 1}}
	return v
}

// namespace gives each test its own namespace, deleted (VMs first) at the end.
func namespace(t *testing.T, name string) string {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}))
	t.Cleanup(func() {
		var vms novacronv1.VirtualMachineList
		_ = env.Client.List(ctx, &vms, client.InNamespace(name))
		for _, v := range vms.Items {
			env.DeleteVMAndWait(t, client.ObjectKeyFromObject(&v), timeout)
		}
	})
	return name
}

func running(t *testing.T, v *novacronv1.VirtualMachine) *novacronv1.VirtualMachine {
	t.Helper()
	return env.WaitVM(t, client.ObjectKeyFromObject(v), timeout, "phase Running", testenv.PhaseIs(novacronv1.VMRunning))
}

func create(t *testing.T, vms ...*novacronv1.VirtualMachine) {
	t.Helper()
	for _, v := range vms {
		require.NoError(t, env.Client.Create(context.Background(), v))
	}
}

func scheduledCondition(v *novacronv1.VirtualMachine) string {
	if c := meta.FindStatusCondition(v.Status.Conditions, novacronv1.VMConditionScheduled); c != nil {
		return c.Reason + ": " + c.Message
	}
	return ""
}

// GPU VMs land only where a T4 is free, each on its own device, with that
// device in its domain; when none is free the VM waits with every node's reason.
func TestGPUVMsLandWhereDevicesAreFree(t *testing.T) {
	ns := namespace(t, "gpus")
	var vms []*novacronv1.VirtualMachine
	for i := 0; i < 4; i++ {
		vms = append(vms, gpuVM(ns, fmt.Sprintf("gpu-vm-%d", i)))
	}
	start := time.Now()
	create(t, vms...)
	devices := map[string]string{}
	for _, v := range vms {
		got := running(t, v)
		require.Len(t, got.Status.Devices, 1)
		assert.Contains(t, []string{"gpu-1", "gpu-2"}, got.Status.NodeName)
		key := got.Status.NodeName + "/" + got.Status.Devices[0].PCIAddress
		assert.Empty(t, devices[key], "device %s given twice", key)
		devices[key] = got.Name
	}
	t.Logf("4 GPU VMs apply to Running: %s", time.Since(start).Round(time.Millisecond))

	// The domain on the node carries the assigned device.
	first := running(t, vms[0])
	h, err := connector.Hypervisor(context.Background(), nodeURIs[first.Status.NodeName])
	require.NoError(t, err)
	st, err := h.State(context.Background(), domain.DomainName(first))
	require.NoError(t, err)
	assert.Equal(t, provider.StateRunning, st)

	// All four T4s are taken: the fifth waits, saying why for every node.
	extra := gpuVM(ns, "gpu-vm-extra")
	create(t, extra)
	pending := env.WaitVM(t, client.ObjectKeyFromObject(extra), timeout, "the scheduler's reason", func(v *novacronv1.VirtualMachine) bool {
		return strings.Contains(scheduledCondition(v), "Unschedulable")
	})
	msg := scheduledCondition(pending)
	assert.Contains(t, msg, "gpu-1: 0/2 tesla-t4 free, 1 needed")
	assert.Contains(t, msg, "gpu-2: 0/2 tesla-t4 free, 1 needed")
	assert.Contains(t, msg, "cpu-1: no tesla-t4", "a node without any says so")
	assert.NotContains(t, msg, "1 gpu-1:", "no count before a node's own reason")
	assert.NotContains(t, msg, "preemption")

	// Deleting a GPU VM frees its device and the waiting VM gets placed.
	env.DeleteVMAndWait(t, client.ObjectKeyFromObject(vms[0]), timeout)
	got := running(t, extra)
	assert.Equal(t, first.Status.NodeName+"/"+first.Status.Devices[0].PCIAddress, got.Status.NodeName+"/"+got.Status.Devices[0].PCIAddress)
}

// Many GPU VMs at once, more than there are GPUs: none shares a device.
func TestConcurrentGPUVMsNeverShareADevice(t *testing.T) {
	ns := namespace(t, "gpu-rush")
	const n = 50
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			assert.NoError(t, env.Client.Create(context.Background(), gpuVM(ns, fmt.Sprintf("rush-%02d", i))))
		}(i)
	}
	wg.Wait()
	var placed []novacronv1.VirtualMachine
	require.Eventually(t, func() bool {
		var list novacronv1.VirtualMachineList
		require.NoError(t, env.Client.List(context.Background(), &list, client.InNamespace(ns)))
		placed = placed[:0]
		waiting := 0
		for _, v := range list.Items {
			switch {
			case v.Status.Phase == novacronv1.VMRunning:
				placed = append(placed, v)
			case strings.Contains(scheduledCondition(&v), "Unschedulable"):
				waiting++
			}
		}
		return len(placed) == 4 && waiting == n-4
	}, timeout, 100*time.Millisecond, "expected 4 VMs running (4 T4s) and %d waiting with a reason", n-4)
	seen := map[string]bool{}
	for _, v := range placed {
		require.Len(t, v.Status.Devices, 1)
		key := v.Status.NodeName + "/" + v.Status.Devices[0].PCIAddress
		assert.False(t, seen[key], "device %s assigned twice", key)
		seen[key] = true
	}
}

// Another workload's pod claiming NovaCron's GPUs through DRA (not a VM)
// takes them from the same slices as VMs do: a VM never gets a device that
// pod holds, and a VM waiting for one says the node has none free.
func TestAnotherWorkloadsGPUPodIsNeverGivenAVMsDevice(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "gpu-neighbours")
	claim := &resourceapi.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "training"},
		Spec: resourceapi.ResourceClaimSpec{Devices: resourceapi.DeviceClaim{Requests: []resourceapi.DeviceRequest{{Name: "gpus",
			Exactly: &resourceapi.ExactDeviceRequest{DeviceClassName: devices.GPUClass, AllocationMode: resourceapi.DeviceAllocationModeExactCount, Count: 2}}}}}}
	require.NoError(t, env.Client.Create(ctx, claim))
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "training"}, Spec: corev1.PodSpec{
		SchedulerName: "novacron-scheduler", NodeSelector: map[string]string{corev1.LabelHostname: "gpu-1"},
		ResourceClaims: []corev1.PodResourceClaim{{Name: "gpus", ResourceClaimName: ptr.To("training")}},
		Containers:     []corev1.Container{{Name: "train", Image: "trainer", Resources: corev1.ResourceRequirements{Claims: []corev1.ResourceClaim{{Name: "gpus"}}}}}}}
	require.NoError(t, env.Client.Create(ctx, pod))
	t.Cleanup(func() { _ = env.Client.Delete(ctx, pod) })
	require.Eventually(t, func() bool {
		return env.Client.Get(ctx, client.ObjectKeyFromObject(claim), claim) == nil && claim.Status.Allocation != nil
	}, timeout, 50*time.Millisecond, "the pod's claim is allocated")
	held := map[string]bool{}
	for _, r := range claim.Status.Allocation.Devices.Results {
		assert.Equal(t, "gpu-1", r.Pool)
		held[r.Device] = true
	}
	require.Len(t, held, 2, "both of gpu-1's T4s")

	a, b := gpuVM(ns, "a"), gpuVM(ns, "b")
	create(t, a, b)
	for _, v := range []*novacronv1.VirtualMachine{a, b} {
		got := running(t, v)
		assert.Equal(t, "gpu-2", got.Status.NodeName, "gpu-1's GPUs are the other pod's")
	}
	c := gpuVM(ns, "c")
	create(t, c)
	pending := env.WaitVM(t, client.ObjectKeyFromObject(c), timeout, "the scheduler's reason", func(v *novacronv1.VirtualMachine) bool {
		return strings.Contains(scheduledCondition(v), "Unschedulable")
	})
	assert.Contains(t, scheduledCondition(pending), "gpu-1: 0/2 tesla-t4 free, 1 needed")

	// The pod leaves: its GPUs go to the waiting VM.
	require.NoError(t, env.Client.Delete(ctx, pod, client.GracePeriodSeconds(0)))
	got := running(t, c)
	assert.Equal(t, "gpu-1", got.Status.NodeName)
}

// A GPU request no node could ever hold says so, with what the cluster has,
// instead of a reason per node that reads as if it might free up.
func TestImpossibleGPURequestsSayWhatTheClusterHas(t *testing.T) {
	ns := namespace(t, "impossible")
	three := gpuVM(ns, "three-t4s")
	three.Spec.Template.Spec.Devices[0].Count = 3
	unknown := gpuVM(ns, "no-such-model")
	unknown.Spec.Template.Spec.Devices[0].Model = "a100-nonexistent"
	create(t, three, unknown)
	for v, want := range map[*novacronv1.VirtualMachine]string{
		three:   "no node has 3 tesla-t4; the most on one node is 2 (gpu-",
		unknown: "no node has nvidia a100-nonexistent GPUs; the nodes have: nvidia tesla-t4 (gpu-1, gpu-2)",
	} {
		got := env.WaitVM(t, client.ObjectKeyFromObject(v), timeout, "the scheduler's reason", func(x *novacronv1.VirtualMachine) bool {
			return strings.Contains(scheduledCondition(x), "Unschedulable")
		})
		msg := scheduledCondition(got)
		assert.Contains(t, msg, want)
		assert.NotContains(t, msg, "cpu-1", "said once for all nodes")
	}
}

// vCPU overcommit is the Hypervisor's: cpu-1 has 8 CPUs at 2:1, 16 vCPUs.
func TestOvercommitAndNodeSelector(t *testing.T) {
	ns := namespace(t, "overcommit")
	var vms []*novacronv1.VirtualMachine
	for i := 0; i < 5; i++ {
		v := newVM(ns, fmt.Sprintf("compute-%d", i), 6)
		v.Spec.Template.Spec.NodeSelector = map[string]string{"node.novacron.io/type": "compute"}
		vms = append(vms, v)
	}
	create(t, vms...)
	// Four run, whichever were placed first; the fifth waits.
	perNode := map[string]int{}
	var pending *novacronv1.VirtualMachine
	for _, v := range vms {
		got := env.WaitVM(t, client.ObjectKeyFromObject(v), timeout, "Running or a reason", func(v *novacronv1.VirtualMachine) bool {
			return v.Status.Phase == novacronv1.VMRunning || strings.Contains(scheduledCondition(v), "Unschedulable")
		})
		if got.Status.Phase == novacronv1.VMRunning {
			perNode[got.Status.NodeName]++
		} else {
			require.Nil(t, pending, "only one VM is left over")
			pending = got
		}
	}
	// 16 vCPUs per node hold two 6-vCPU VMs, not three.
	assert.Equal(t, map[string]int{"cpu-1": 2, "cpu-2": 2}, perNode)
	require.NotNil(t, pending)
	assert.Contains(t, scheduledCondition(pending), "cpu-1: 4/16 vCPUs free, 6 needed")
}

// spread puts two VMs on different nodes; pack puts them together. Required
// anti-affinity between VMs is honoured through their launcher pods.
func TestPackSpreadAndAntiAffinity(t *testing.T) {
	ns := namespace(t, "strategies")
	sel := map[string]string{"node.novacron.io/type": "compute"}
	a, b := newVM(ns, "spread-a", 1), newVM(ns, "spread-b", 1)
	a.Spec.Template.Spec.NodeSelector, b.Spec.Template.Spec.NodeSelector = sel, sel
	create(t, a)
	ga := running(t, a)
	create(t, b)
	gb := running(t, b)
	assert.NotEqual(t, ga.Status.NodeName, gb.Status.NodeName, "spread")

	c, d := newVM(ns, "pack-c", 1), newVM(ns, "pack-d", 1)
	for _, v := range []*novacronv1.VirtualMachine{c, d} {
		v.Spec.Template.Spec.SchedulerName = "novacron-scheduler-pack"
		v.Spec.Template.Spec.NodeSelector = sel
	}
	create(t, c)
	gc := running(t, c)
	create(t, d)
	gd := running(t, d)
	assert.Equal(t, gc.Status.NodeName, gd.Status.NodeName, "pack")

	// Two databases that must not share a node.
	anti := &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
		LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}, TopologyKey: "kubernetes.io/hostname",
	}}}}
	var dbs []*novacronv1.VirtualMachine
	for i := 0; i < 2; i++ {
		v := newVM(ns, fmt.Sprintf("db-%d", i), 1)
		v.Spec.Template.Spec.SchedulerName = "novacron-scheduler-pack"
		v.Spec.Template.Metadata.Labels = map[string]string{"app": "db"}
		v.Spec.Template.Spec.Affinity = anti
		v.Spec.Template.Spec.NodeSelector = sel
		dbs = append(dbs, v)
	}
	create(t, dbs...)
	assert.NotEqual(t, running(t, dbs[0]).Status.NodeName, running(t, dbs[1]).Status.NodeName, "anti-affinity, even when packing")
}

// A placement policy denies a node; editing it moves new VMs without restart.
func TestPlacementPolicy(t *testing.T) {
	ns := namespace(t, "policy")
	ctx := context.Background()
	pol := &novacronv1.VirtualMachinePolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "zone-a-only"},
		Spec: novacronv1.VirtualMachinePolicySpec{DecisionPoints: []novacronv1.DecisionPoint{novacronv1.DecisionPlacement}, Enforcement: novacronv1.EnforcementDeny,
			Rego: "package zones\ndeny_node[n.name] := \"VMs run in zone a\" if {\n  some n in input.nodes\n  n.labels.zone != \"a\"\n}\n"},
	}
	require.NoError(t, env.Client.Create(ctx, pol))
	t.Cleanup(func() { _ = env.Client.Delete(ctx, pol) })

	sel := map[string]string{"node.novacron.io/type": "compute"}
	v := newVM(ns, "zoned", 1)
	v.Spec.Template.Spec.NodeSelector = sel
	require.Eventually(t, func() bool { // the scheduler's informer sees the policy
		probe := newVM(ns, fmt.Sprintf("probe-%d", time.Now().UnixNano()), 1)
		probe.Spec.Template.Spec.NodeSelector = map[string]string{"zone": "b", "node.novacron.io/type": "compute"}
		create(t, probe)
		defer env.DeleteVMAndWait(t, client.ObjectKeyFromObject(probe), timeout)
		got := env.WaitVM(t, client.ObjectKeyFromObject(probe), timeout, "placed or refused", func(v *novacronv1.VirtualMachine) bool {
			return v.Status.Phase == novacronv1.VMRunning || strings.Contains(scheduledCondition(v), "Unschedulable")
		})
		return strings.Contains(scheduledCondition(got), "cpu-2: policy zone-a-only: VMs run in zone a")
	}, timeout, 100*time.Millisecond)
	create(t, v)
	assert.Equal(t, "cpu-1", running(t, v).Status.NodeName)

	// Now zone b only.
	require.NoError(t, env.Client.Get(ctx, client.ObjectKeyFromObject(pol), pol))
	pol.Spec.Rego = strings.Replace(pol.Spec.Rego, `n.labels.zone != "a"`, `n.labels.zone != "b"`, 1)
	require.NoError(t, env.Client.Update(ctx, pol))
	require.Eventually(t, func() bool {
		w := newVM(ns, fmt.Sprintf("zoned-%d", time.Now().UnixNano()), 1)
		w.Spec.Template.Spec.NodeSelector = sel
		create(t, w)
		defer env.DeleteVMAndWait(t, client.ObjectKeyFromObject(w), timeout)
		return running(t, w).Status.NodeName == "cpu-2"
	}, timeout, 100*time.Millisecond, "the edited policy never moved new VMs")
}

// A migration's target pod never lands on the source node, and only on nodes
// whose CPU model matches the source's. The migrations are real ones: only
// the pods a VM records as its own are placed at all.
func TestMigrationTargets(t *testing.T) {
	ns := namespace(t, "migration")
	ctx := context.Background()
	v := newVM(ns, "mover", 1)
	v.Spec.Template.Spec.NodeSelector = map[string]string{"node.novacron.io/type": "compute"}
	v.Spec.MigrationPolicy = &novacronv1.MigrationPolicy{AllowLiveMigration: true}
	create(t, v)
	running(t, v)
	other := map[string]string{"cpu-1": "cpu-2", "cpu-2": "cpu-1"}

	// target starts a migration and waits for its target pod to be placed
	// or refused (the migration itself may then go either way).
	n := 0
	target := func() (src string, pod *corev1.Pod) {
		n++
		vm := running(t, v)
		m := &novacronv1.VirtualMachineMigration{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("move-%d", n), Namespace: ns},
			Spec: novacronv1.VirtualMachineMigrationSpec{VMName: v.Name}}
		require.NoError(t, env.Client.Create(ctx, m))
		t.Cleanup(func() { _ = env.Client.Delete(ctx, m) })
		pod = &corev1.Pod{}
		require.Eventually(t, func() bool {
			if env.Client.Get(ctx, client.ObjectKeyFromObject(m), m) != nil || m.Status.TargetPod == "" {
				return false
			}
			err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: m.Status.TargetPod}, pod)
			return err == nil && (pod.Spec.NodeName != "" || refused(pod))
		}, timeout, 50*time.Millisecond)
		if refused(pod) {
			require.NoError(t, env.Client.Delete(ctx, m))
		}
		env.WaitVM(t, client.ObjectKeyFromObject(v), timeout, "its migration over", func(v *novacronv1.VirtualMachine) bool {
			return v.Status.MigrationState == nil && v.Status.Phase == novacronv1.VMRunning
		})
		return vm.Status.NodeName, pod
	}
	src, pod := target()
	assert.Equal(t, other[src], pod.Spec.NodeName, "never the source node")

	// A different CPU model on the other node leaves the target unplaced.
	// The scheduler learns of the change through its informer: a target made
	// before that may still be placed, so try until one is refused.
	setModel := func(node, model string) (was string) {
		hv := &novacronv1.Hypervisor{}
		require.NoError(t, env.Client.Get(ctx, client.ObjectKey{Name: node}, hv))
		was, hv.Status.CPUModel = hv.Status.CPUModel, model
		require.NoError(t, env.Client.Status().Update(ctx, hv))
		return was
	}
	src = running(t, v).Status.NodeName
	changed := other[src]
	saved := setModel(changed, "Skylake-Server")
	t.Cleanup(func() { setModel(changed, saved) })
	for i := 0; !refused(pod); i++ {
		require.Less(t, i, 20, "the CPU model change never reached the scheduler")
		src, pod = target() // a migration placed before then may have moved the VM
	}
	assert.Empty(t, pod.Spec.NodeName)
	model := func(node string) string {
		hv := &novacronv1.Hypervisor{}
		require.NoError(t, env.Client.Get(ctx, client.ObjectKey{Name: node}, hv))
		return hv.Status.CPUModel
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled {
			assert.Contains(t, c.Message, fmt.Sprintf("%s: CPU model %s differs from the source node's %s", other[src], model(other[src]), model(src)))
			assert.Contains(t, c.Message, src+": the VM is migrating away from this node")
		}
	}
}

// refused is true once the scheduler has said why it cannot place the pod.
func refused(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && strings.Contains(c.Message, "CPU model") {
			return true
		}
	}
	return false
}
