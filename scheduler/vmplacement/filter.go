package vmplacement

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	// alignNUMA is the VM's claim keeping its devices on one NUMA node;
	// allocated holds, per node, the PCI addresses of the devices DRA has
	// allocated there (to any pod, VM or not, in flight included).
	alignNUMA bool
	allocated map[string]sets.Set[string]
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
		if st := p.readClaims(s, pod); st != nil {
			return nil, st
		}
		// Most nodes have no devices at all; they all fail for the same
		// reason, worked out once here rather than once per node.
		_, s.noDevicesReason = devices.Assign(&s.req, &novacronv1.Hypervisor{}, nil, s.alignNUMA)
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

// readClaims reads the pod's device claim (for its NUMA constraint) and the
// devices DRA has allocated on every node, once per cycle: both come from
// the scheduler's own DRA state, which counts claims being allocated by
// pods still in flight, so two pods never see the same device free.
func (p *Plugin) readClaims(s *cycleState, pod *corev1.Pod) *fwk.Status {
	dra := p.handle.SharedDRAManager()
	if dra == nil {
		return fwk.AsStatus(fmt.Errorf("%s: the scheduler runs without DRA", Name))
	}
	if name := claimName(pod); name != "" {
		if claim, err := dra.ResourceClaims().Get(pod.Namespace, name); err == nil {
			s.alignNUMA = devices.AlignsNUMA(&claim.Spec)
		}
	}
	ids, err := dra.ResourceClaims().ListAllAllocatedDevices()
	if err != nil {
		return fwk.AsStatus(err)
	}
	s.allocated = map[string]sets.Set[string]{}
	for id := range ids {
		// A devices.novacron.io pool is its node, and a device's name its
		// PCI address; other drivers' devices are not in the inventory.
		if pci, ok := devices.AllocatedPCIAddress(id.Driver.String(), id.Device.String()); ok {
			node := id.Pool.String()
			if s.allocated[node] == nil {
				s.allocated[node] = sets.New[string]()
			}
			s.allocated[node].Insert(pci)
		}
	}
	return nil
}

// claimName is the pod's device claim that kube-controller-manager made it.
func claimName(pod *corev1.Pod) string {
	for _, c := range pod.Status.ResourceClaimStatuses {
		if c.Name == devices.ClaimName && c.ResourceClaimName != nil {
			return *c.ResourceClaimName
		}
	}
	return ""
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

// nodeUse is what the VMs already on a node take: vCPUs and memory, and
// the devices DRA allocated there.
type nodeUse struct {
	vcpus, memBytes int64
	devices         sets.Set[string]
}

// usage is the node's use as this cycle sees it. The pod being placed is
// not among the node's pods here: Filter and Score see the snapshot taken
// before it was assumed.
func (p *Plugin) usage(s *cycleState, e *hvEntry, ni fwk.NodeInfo) nodeUse {
	u := p.podUsage(e, ni)
	u.devices = s.allocated[ni.Node().Name]
	return u
}

// podUsage sums the VMs whose pods are on a node. It is computed once per
// change of the node's pods (the NodeInfo's generation) or of what VMs
// record (vmEpoch), not once per pod and node: it would otherwise be most of
// the plugin's time.
//
// A pod counts only as the pod its VM's status records (which tenants cannot
// write), and by the VM's own size: anyone who may make pods could otherwise
// label one a launcher and claim, or free, a node's capacity.
func (p *Plugin) podUsage(e *hvEntry, ni fwk.NodeInfo) nodeUse {
	gen, epoch := ni.GetGeneration(), p.vmEpoch.Load()
	if c := e.use.Load(); c != nil && c.generation == gen && c.epoch == epoch {
		return c.use
	}
	var u nodeUse
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
	}
	e.use.Store(&cachedUse{generation: gen, epoch: epoch, use: u})
	return u
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
	use := p.usage(s, e, ni)
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
		// DRA allocates; this says why it cannot here in the VM's words
		// ("0/2 tesla-t4 free"), from the same slices and claims.
		if _, reason := devices.Assign(&s.req, hv, use.devices, s.alignNUMA); reason != "" {
			return fwk.NewStatus(fwk.Unschedulable, reason)
		}
	}
	return nil
}
