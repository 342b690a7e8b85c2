package vmplacement

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	fwk "k8s.io/kube-scheduler/framework"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/devices"
	"github.com/novacron/operator/migration"
	"github.com/novacron/operator/policies"
)

const stateKey fwk.StateKey = Name

// cycleState is what PreFilter works out once per pod for Filter and Score.
type cycleState struct {
	// vcpus and memBytes are the VM's size; req its devices.
	vcpus, memBytes int64
	req             devices.Request
	// denied and scores come from the placement policies, per node.
	denied map[string][]string
	scores map[string]int64
	// source is the node a migration's VM leaves, and its CPU model.
	source, sourceCPUModel string
	// noDevicesReason is why a VM with devices does not fit a node without any.
	noDevicesReason string
}

func (s *cycleState) Clone() fwk.StateData { return s }

func readState(state fwk.CycleState) (*cycleState, *fwk.Status) {
	d, err := state.Read(stateKey)
	if err != nil {
		return nil, fwk.AsStatus(fmt.Errorf("%s: reading cycle state: %w", Name, err))
	}
	return d.(*cycleState), nil
}

// PreFilter reads the VM behind a launcher pod and evaluates the placement
// policies once for all nodes, so Filter and Score only look things up.
func (p *Plugin) PreFilter(ctx context.Context, state fwk.CycleState, pod *corev1.Pod, nodes []fwk.NodeInfo) (*fwk.PreFilterResult, *fwk.Status) {
	if !isLauncher(pod) {
		return nil, fwk.NewStatus(fwk.Skip)
	}
	vm, err := p.vm(pod)
	if apierrors.IsNotFound(err) {
		return nil, fwk.NewStatus(fwk.UnschedulableAndUnresolvable, fmt.Sprintf("VirtualMachine %s/%s not found", pod.Namespace, pod.Labels[novacronv1.LabelVM]))
	}
	if err != nil {
		return nil, fwk.AsStatus(err)
	}
	if st := p.PreEnqueue(ctx, pod); st != nil {
		return nil, st // the record was undone since
	}
	s := &cycleState{}
	spec := &vm.Spec.Template.Spec
	s.vcpus, s.memBytes = int64(spec.Resources.CPU), spec.Resources.Memory.Value()
	pools, err := devices.VFPools(ctx, p.readNetwork, vm)
	if devices.IsVMError(err) {
		return nil, fwk.NewStatus(fwk.UnschedulableAndUnresolvable, err.Error())
	}
	if err != nil {
		return nil, fwk.AsStatus(err)
	}
	s.req = devices.RequestFor(spec, pools)
	if s.req.HasDevices() {
		// A request no node could ever hold is said once, with what the
		// cluster has, rather than as a reason per node.
		if why := devices.Unsatisfiable(&s.req, p.hypervisors()); why != "" {
			return nil, fwk.NewStatus(fwk.UnschedulableAndUnresolvable, why)
		}
		// Most nodes have no devices at all; they all fail for the same
		// reason, worked out once here rather than once per node.
		_, s.noDevicesReason = devices.Assign(&s.req, &novacronv1.Hypervisor{}, nil, p.args.NUMAAlignment)
	}
	if src := pod.Labels[novacronv1.LabelMigrationSource]; src != "" {
		s.source = src
		if hv, err := p.hypervisor(src); err == nil {
			s.sourceCPUModel = hv.Status.CPUModel
		}
	}

	s.denied, s.scores = map[string][]string{}, map[string]int64{}
	if !p.engine.Serves(novacronv1.DecisionPlacement) {
		state.Write(stateKey, s)
		return nil, nil
	}
	in := policies.PlacementInput{VM: vm, Namespace: policies.Namespace{Name: pod.Namespace}}
	for _, ni := range nodes {
		node := ni.Node()
		n := policies.NodeInput{Name: node.Name, Labels: node.Labels}
		if hv, err := p.hypervisor(node.Name); err == nil {
			n.Hypervisor = hv.Status
		}
		in.Nodes = append(in.Nodes, n)
	}
	res, err := p.engine.Place(ctx, in)
	if err != nil {
		return nil, fwk.AsStatus(err)
	}
	s.denied, s.scores = res.Denied, res.Scores
	state.Write(stateKey, s)
	return nil, nil
}

// readNetwork reads a NetworkAttachmentDefinition's annotations for
// devices.VFPool. Answers are kept for a short while: many VMs share a few
// networks, and the definition's CRD may not be installed at all, which rules
// out an informer.
func (p *Plugin) readNetwork(ctx context.Context, ns, name string) (map[string]string, error) {
	key := ns + "/" + name
	p.mu.Lock()
	e, ok := p.nads[key]
	p.mu.Unlock()
	if ok && time.Since(e.at) < nadCacheTTL {
		return e.annotations, nil
	}
	nad, err := p.dyn.Resource(nadGVR).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.nads[key] = nadEntry{annotations: nad.GetAnnotations(), at: time.Now()}
	p.mu.Unlock()
	return nad.GetAnnotations(), nil
}

const nadCacheTTL = 30 * time.Second

type nadEntry struct {
	annotations map[string]string
	at          time.Time
}

// PreFilterExtensions is nil: the plugin's state does not depend on which
// other pods a preemption would remove.
func (p *Plugin) PreFilterExtensions() fwk.PreFilterExtensions { return nil }

// nodeUse is what the VMs already on a node take: vCPUs, memory and devices,
// counting pods reserved in this scheduler but not yet annotated.
type nodeUse struct {
	vcpus, memBytes int64
	devices         sets.Set[string]
	// withDevices are the pods whose devices are counted from their annotation.
	withDevices sets.Set[types.UID]
}

// The pod being placed is not among the node's pods here: Filter, Score and
// Reserve see the snapshot taken before it was assumed.
//
// A reservation counts until this cycle's snapshot holds the pod with its
// devices annotation, and is dropped then. Dropping it when the pod's update
// reaches the plugin's own informer would race with the scheduler's cache,
// which hears of the same update on another goroutine: a cycle in between
// would see the device free.
func (p *Plugin) usage(e *hvEntry, ni fwk.NodeInfo, self *corev1.Pod) nodeUse {
	u := p.podUsage(e, ni)
	if p.reserved.Load() == 0 {
		return u // the common case: no device pod in flight, no lock
	}
	node := ni.Node().Name
	var extra []string
	stale := false
	p.mu.RLock()
	for uid, devices := range p.reserve[node] {
		switch {
		case uid == self.UID:
		case u.withDevices.Has(uid):
			stale = true
		default:
			extra = append(extra, devices...)
		}
	}
	p.mu.RUnlock()
	if stale {
		p.dropCounted(node, u.withDevices)
	}
	if len(extra) > 0 {
		u.devices = u.devices.Clone().Insert(extra...)
	}
	return u
}

// dropCounted ends the reservations on node of pods the snapshot already
// counts from their annotation.
func (p *Plugin) dropCounted(node string, counted sets.Set[types.UID]) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for uid := range p.reserve[node] {
		if counted.Has(uid) {
			delete(p.reserve[node], uid)
			p.reserved.Add(-1)
		}
	}
	if len(p.reserve[node]) == 0 {
		delete(p.reserve, node)
	}
}

// podUsage sums the VMs whose pods are on a node. It is computed once per
// change of the node's pods (the NodeInfo's generation) or of what VMs
// record (vmEpoch), not once per pod and node: it would otherwise be most of
// the plugin's time.
//
// A pod counts only as the pod its VM's status records (which tenants cannot
// write), and by the VM's own size and recorded devices: anyone who may make
// pods could otherwise label one a launcher and claim, or free, a node's
// capacity with its annotations.
func (p *Plugin) podUsage(e *hvEntry, ni fwk.NodeInfo) nodeUse {
	gen, epoch := ni.GetGeneration(), p.vmEpoch.Load()
	if c := e.use.Load(); c != nil && c.generation == gen && c.epoch == epoch {
		return c.use
	}
	u := nodeUse{devices: sets.New[string](), withDevices: sets.New[types.UID]()}
	for _, pi := range ni.GetPods() {
		pod := pi.GetPod()
		if !isLauncher(pod) {
			continue
		}
		vm, err := p.vm(pod)
		if err != nil || !vm.LaunchedBy(pod) {
			continue
		}
		u.vcpus += max(int64(vm.Spec.Template.Spec.Resources.CPU), 0)
		u.memBytes += max(vm.Spec.Template.Spec.Resources.Memory.Value(), 0)
		a, ok := countedDevices(vm, pod)
		if !ok {
			continue
		}
		u.withDevices.Insert(pod.UID)
		u.devices.Insert(a.PCIAddresses()...)
	}
	e.use.Store(&cachedUse{generation: gen, epoch: epoch, use: u})
	return u
}

// countedDevices are the devices a VM's pod holds: those the operator
// checked and recorded once it saw the pod, and until then what Bind wrote on
// it. ok is false while neither is there.
func countedDevices(vm *novacronv1.VirtualMachine, pod *corev1.Pod) (novacronv1.DeviceAssignment, bool) {
	if pod.UID == vm.Status.LauncherPodUID {
		if a := vm.Status.AssignedDevices(); !a.Empty() {
			return a, true
		}
	}
	return parseAssignment(pod)
}

type cachedUse struct {
	generation, epoch int64
	use               nodeUse
}

// Filter says whether the VM fits on the node, and if not, why.
//
// Each reason starts with the node's name: the scheduler's summary of a pod it
// cannot place counts identical reasons, and so lists every node's own one
// ("node-3: 0/2 tesla-t4 free"), which the operator shows on the VM.
func (p *Plugin) Filter(ctx context.Context, state fwk.CycleState, pod *corev1.Pod, ni fwk.NodeInfo) *fwk.Status {
	s, st := readState(state)
	if st != nil {
		return st
	}
	node := ni.Node().Name
	if st := p.filter(s, pod, ni); st != nil && !st.IsSuccess() {
		return fwk.NewStatus(st.Code(), node+": "+st.Message())
	}
	return nil
}

func (p *Plugin) filter(s *cycleState, pod *corev1.Pod, ni fwk.NodeInfo) *fwk.Status {
	node := ni.Node().Name
	if node == s.source {
		return fwk.NewStatus(fwk.UnschedulableAndUnresolvable, "the VM is migrating away from this node")
	}
	e, err := p.hypervisorEntry(node)
	if err != nil {
		return fwk.NewStatus(fwk.UnschedulableAndUnresolvable, "no Hypervisor object for this node")
	}
	hv := e.hv
	if e.unreachable != "" {
		return fwk.NewStatus(fwk.Unschedulable, e.unreachable)
	}
	if reasons := s.denied[node]; len(reasons) > 0 {
		return fwk.NewStatus(fwk.Unschedulable, strings.Join(reasons, "; "))
	}
	if s.source != "" && s.sourceCPUModel != "" && hv.Status.CPUModel != s.sourceCPUModel {
		return fwk.NewStatus(fwk.UnschedulableAndUnresolvable, fmt.Sprintf("CPU model %s differs from the source node's %s", hv.Status.CPUModel, s.sourceCPUModel))
	}
	use := p.usage(e, ni, pod)
	// The VM ledger of the one capacity model; NodeResourcesFit checks the
	// launcher pod's requests against the Node.
	capacity := migration.Resources{VCPUs: float64(e.capCPU), Memory: float64(e.capMem)}
	used := migration.Resources{VCPUs: float64(use.vcpus), Memory: float64(use.memBytes)}
	if why := migration.Short(capacity, used, migration.Resources{VCPUs: float64(s.vcpus), Memory: float64(s.memBytes)}); why != "" {
		return fwk.NewStatus(fwk.Unschedulable, why)
	}
	if s.req.HasDevices() {
		if e.devices == 0 {
			return fwk.NewStatus(fwk.Unschedulable, s.noDevicesReason)
		}
		if _, reason := devices.Assign(&s.req, hv, use.devices, p.args.NUMAAlignment); reason != "" {
			return fwk.NewStatus(fwk.Unschedulable, reason)
		}
	}
	return nil
}
