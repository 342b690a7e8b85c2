// Package vmplacement is the NovaCron scheduler plugin: it places VM launcher
// pods on hypervisor nodes by the Hypervisor inventory (vCPUs and memory with
// the node's overcommit ratios, GPUs by vendor/model/count, SR-IOV VFs per
// network, optional NUMA alignment) and by the platform team's placement
// policies. A VM's devices are DRA requests of its launcher pod, which
// kube-scheduler's DynamicResources plugin allocates; VMPlacement only steers
// which node (and says why a node cannot take them, from the same slices and
// allocated claims).
package vmplacement

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/policies"
)

// Name is the plugin's name in a KubeSchedulerConfiguration.
const Name = "VMPlacement"

// GroupVersionResources the plugin watches.
var (
	hypervisorsGVR = novacronv1.GroupVersion.WithResource("hypervisors")
	vmsGVR         = novacronv1.GroupVersion.WithResource("virtualmachines")
	policiesGVR    = novacronv1.GroupVersion.WithResource("virtualmachinepolicies")
	nadGVR         = schema.GroupVersionResource{Group: "k8s.cni.cncf.io", Version: "v1", Resource: "network-attachment-definitions"}
)

// Plugin is the VMPlacement plugin.
type Plugin struct {
	args   Args
	handle fwk.Handle
	dyn    dynamic.Interface
	vms    cache.GenericLister
	engine *policies.Engine
	mu     sync.Mutex
	// vmEpoch counts changes of what podUsage reads of VMs.
	vmEpoch atomic.Int64
	nads    map[string]nadEntry

	// hvCache holds every Hypervisor converted once per change, not once per
	// node per pod: Filter and Score read it for every node of every cycle.
	hvMu    sync.RWMutex
	hvCache map[string]*hvEntry
	// ready is set once the plugin's informers have synced; changes after
	// that wake pending VMs up (activatePending).
	ready atomic.Bool
}

// hvEntry is a Hypervisor with what Filter and Score derive from it on every
// cycle worked out once.
type hvEntry struct {
	hv             *novacronv1.Hypervisor
	capCPU, capMem int64
	devices        int    // GPUs and VFs in the inventory
	unreachable    string // the Reachable condition's message when False
	// use caches the node's VMs' use at a NodeInfo generation; kept here so
	// Filter and Score find everything about a node with one look-up.
	use atomic.Pointer[cachedUse]
}

var (
	_ fwk.PreFilterPlugin   = (*Plugin)(nil)
	_ fwk.FilterPlugin      = (*Plugin)(nil)
	_ fwk.ScorePlugin       = (*Plugin)(nil)
	_ fwk.EnqueueExtensions = (*Plugin)(nil)
	_ fwk.SignPlugin        = (*Plugin)(nil)
)

// New builds the plugin: its informers for Hypervisors, VirtualMachines and
// VirtualMachinePolicies, and its own policy engine fed by the latter.
func New(ctx context.Context, obj runtime.Object, h fwk.Handle) (fwk.Plugin, error) {
	args, err := decodeArgs(obj)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(h.KubeConfig())
	if err != nil {
		return nil, err
	}
	engine, err := policies.NewEngine()
	if err != nil {
		return nil, err
	}
	p := &Plugin{args: args, handle: h, dyn: dyn, engine: engine, nads: map[string]nadEntry{}, hvCache: map[string]*hvEntry{}}

	if err := p.watch(ctx, h); err != nil {
		return nil, err
	}
	p.ready.Store(true)
	return p, nil
}

// watch starts the plugin's informers (Hypervisors, VirtualMachines,
// VirtualMachinePolicies) and its handler on the scheduler's pod informer,
// and waits for them to sync.
func (p *Plugin) watch(ctx context.Context, h fwk.Handle) error {
	f := dynamicinformer.NewDynamicSharedInformerFactory(p.dyn, 0)
	hvInformer := f.ForResource(hypervisorsGVR).Informer()
	if _, err := hvInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { p.cacheHypervisor(o) },
		UpdateFunc: func(_, o any) { p.cacheHypervisor(o) },
		DeleteFunc: func(o any) {
			if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			if hv, err := toTyped[novacronv1.Hypervisor](o); err == nil {
				p.hvMu.Lock()
				delete(p.hvCache, hv.Name)
				p.hvMu.Unlock()
			}
		},
	}); err != nil {
		return err
	}
	// VMs are converted once as they arrive, not on every cycle that reads one.
	vmInformer := f.ForResource(vmsGVR).Informer()
	if err := vmInformer.SetTransform(func(o any) (any, error) {
		if _, ok := o.(*unstructured.Unstructured); !ok {
			return o, nil
		}
		return toTyped[novacronv1.VirtualMachine](o)
	}); err != nil {
		return err
	}
	p.vms = cache.NewGenericLister(vmInformer.GetIndexer(), vmsGVR.GroupResource())
	if _, err := vmInformer.AddEventHandler(p.vmHandler()); err != nil {
		return err
	}
	pol := f.ForResource(policiesGVR).Informer()
	logger := klog.FromContext(ctx)
	if _, err := pol.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { p.loadPolicy(ctx, logger, o) },
		UpdateFunc: func(_, o any) { p.loadPolicy(ctx, logger, o) },
		DeleteFunc: func(o any) {
			if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			if u, err := toTyped[novacronv1.VirtualMachinePolicy](o); err == nil {
				p.engine.Remove(u.Name)
			}
		},
	}); err != nil {
		return err
	}
	indexByNamespace(ctx, h.SharedInformerFactory().Core().V1().Pods().Informer())
	f.Start(ctx.Done())
	for gvr, ok := range f.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("%s: cache of %s did not sync", Name, gvr)
		}
	}
	return nil
}

// Name returns the plugin's name.
func (p *Plugin) Name() string { return Name }

func (p *Plugin) loadPolicy(ctx context.Context, logger klog.Logger, o any) {
	pol, err := toTyped[novacronv1.VirtualMachinePolicy](o)
	if err != nil {
		return
	}
	if err := p.engine.Upsert(ctx, pol); err != nil {
		// The operator reports compile errors in the policy's status; the last
		// good version stays in force here too.
		logger.V(2).Info("policy does not compile; keeping its last good version", "policy", pol.Name, "err", err)
	}
}

// toTyped converts an informer's unstructured object into a NovaCron type.
func toTyped[T any](o any) (*T, error) {
	u, ok := o.(interface{ UnstructuredContent() map[string]any })
	if !ok {
		return nil, fmt.Errorf("unexpected object %T", o)
	}
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.UnstructuredContent(), out); err != nil {
		return nil, err
	}
	return out, nil
}

func (p *Plugin) cacheHypervisor(o any) {
	hv, err := toTyped[novacronv1.Hypervisor](o)
	if err != nil {
		return
	}
	e := &hvEntry{hv: hv}
	e.capCPU, e.capMem = hv.VMCapacity()
	e.devices = len(hv.Status.GPUs)
	for _, pool := range hv.Status.SRIOV {
		e.devices += len(pool.VirtualFunctions)
	}
	if c := meta.FindStatusCondition(hv.Status.Conditions, novacronv1.HypervisorConditionReachable); c != nil && c.Status == metav1.ConditionFalse {
		e.unreachable = "hypervisor unreachable: " + c.Message
	}
	p.hvMu.Lock()
	old := p.hvCache[hv.Name]
	p.hvCache[hv.Name] = e
	p.hvMu.Unlock()
	if p.ready.Load() && (old == nil || e.mayFitMore(old) || p.engine.Serves(novacronv1.DecisionPlacement)) {
		p.activatePending()
	}
}

// mayFitMore says whether a VM rejected on node old may fit on e: more
// capacity, other devices, a CPU model migrations compare, or the hypervisor
// answering again. (Placement policies may read any of the Hypervisor's
// status, so with policies in force every change counts.)
func (e *hvEntry) mayFitMore(old *hvEntry) bool {
	return e.capCPU > old.capCPU || e.capMem > old.capMem || (old.unreachable != "" && e.unreachable == "") ||
		e.hv.Status.CPUModel != old.hv.Status.CPUModel ||
		!equality.Semantic.DeepEqual(e.hv.Status.GPUs, old.hv.Status.GPUs) || !equality.Semantic.DeepEqual(e.hv.Status.SRIOV, old.hv.Status.SRIOV)
}

// activatePending sends the launcher pods waiting for a node back to the
// scheduling queue. The scheduler hears of a Hypervisor's change through its
// own informer, which may be ahead of this plugin's cache: a pod retried in
// between is rejected on the old state, and without this would wait for the
// next change, or minutes for the queue's periodic flush.
func (p *Plugin) activatePending() {
	pods, err := p.handle.SharedInformerFactory().Core().V1().Pods().Lister().List(launcherPods)
	if err != nil {
		return
	}
	waiting := map[string]*corev1.Pod{}
	for _, pod := range pods {
		if pod.Spec.NodeName == "" && isLauncher(pod) {
			waiting[pod.Namespace+"/"+pod.Name] = pod
		}
	}
	if len(waiting) > 0 {
		p.handle.Activate(klog.Background(), waiting)
	}
}

// launcherPods selects the pods isLauncher looks at.
var launcherPods = labels.SelectorFromSet(labels.Set{novacronv1.LabelComponent: novacronv1.ComponentLauncher})

// hypervisor returns the node's Hypervisor; callers must not change it.
func (p *Plugin) hypervisor(node string) (*novacronv1.Hypervisor, error) {
	e, err := p.hypervisorEntry(node)
	if err != nil {
		return nil, err
	}
	return e.hv, nil
}

// hypervisors are all the Hypervisors; callers must not change them.
func (p *Plugin) hypervisors() []*novacronv1.Hypervisor {
	p.hvMu.RLock()
	defer p.hvMu.RUnlock()
	out := make([]*novacronv1.Hypervisor, 0, len(p.hvCache))
	for _, e := range p.hvCache {
		out = append(out, e.hv)
	}
	return out
}

func (p *Plugin) hypervisorEntry(node string) (*hvEntry, error) {
	p.hvMu.RLock()
	defer p.hvMu.RUnlock()
	e, ok := p.hvCache[node]
	if !ok {
		return nil, fmt.Errorf("no Hypervisor %s", node)
	}
	return e, nil
}

// vm is the VirtualMachine behind a launcher pod; callers must not change it.
func (p *Plugin) vm(pod *corev1.Pod) (*novacronv1.VirtualMachine, error) {
	o, err := p.vms.ByNamespace(pod.Namespace).Get(pod.Labels[novacronv1.LabelVM])
	if err != nil {
		return nil, err
	}
	vm, ok := o.(*novacronv1.VirtualMachine)
	if !ok {
		return nil, fmt.Errorf("unexpected object %T for VirtualMachine %s/%s", o, pod.Namespace, pod.Labels[novacronv1.LabelVM])
	}
	return vm, nil
}

// isLauncher tells VM launcher pods from every other pod, which the plugin
// leaves to the default plugins.
func isLauncher(pod *corev1.Pod) bool {
	return pod.Labels[novacronv1.LabelComponent] == novacronv1.ComponentLauncher && pod.Labels[novacronv1.LabelVM] != ""
}
