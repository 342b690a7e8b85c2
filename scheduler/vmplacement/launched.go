package vmplacement

import (
	"context"
	"fmt"
	"reflect"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

var _ fwk.PreEnqueuePlugin = (*Plugin)(nil)

// PreEnqueue holds back a launcher pod until its VM records it (the
// operator writes the pod's UID into the VM's status right after making
// it). A pod only labelled a launcher, which anyone with pod rights can make,
// is never placed, so never holds a device. Held pods are let go by
// vmChanged when the record arrives, without the scheduler's back-off.
func (p *Plugin) PreEnqueue(_ context.Context, pod *corev1.Pod) *fwk.Status {
	if !isLauncher(pod) {
		return nil
	}
	vm, err := p.vm(pod)
	if err != nil {
		return fwk.NewStatus(fwk.UnschedulableAndUnresolvable, fmt.Sprintf("VirtualMachine %s/%s not found", pod.Namespace, pod.Labels[novacronv1.LabelVM]))
	}
	if !vm.LaunchedBy(pod) {
		return fwk.NewStatus(fwk.UnschedulableAndUnresolvable, fmt.Sprintf("VirtualMachine %s/%s does not record pod %s as its own", pod.Namespace, vm.Name, pod.Name))
	}
	return nil
}

// vmHandler keeps two things in step with the plugin's VM cache: pods held
// by PreEnqueue go to the queue once their VM records them, and the nodes'
// cached use (podUsage) is worked out again when what it counts changes.
func (p *Plugin) vmHandler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(o any) { p.vmChanged(nil, o) },
		UpdateFunc: func(old, o any) {
			p.vmChanged(old, o)
		},
		DeleteFunc: func(o any) {
			if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			p.vmChanged(o, nil)
		},
	}
}

func (p *Plugin) vmChanged(oldObj, newObj any) {
	old, _ := oldObj.(*novacronv1.VirtualMachine)
	vm, _ := newObj.(*novacronv1.VirtualMachine)
	if reflect.DeepEqual(counted(old), counted(vm)) {
		return
	}
	p.vmEpoch.Add(1)
	if vm != nil && p.ready.Load() {
		p.activateLaunchers(vm)
	}
}

// countedFacts are what podUsage and PreEnqueue read of a VM.
type countedFacts struct {
	launcherPod, launcherPodUID, targetPodUID string
	cpu                                       int32
	memory                                    int64
}

func counted(vm *novacronv1.VirtualMachine) *countedFacts {
	if vm == nil {
		return nil
	}
	f := &countedFacts{launcherPod: vm.Status.LauncherPod, launcherPodUID: string(vm.Status.LauncherPodUID),
		cpu: vm.Spec.Template.Spec.Resources.CPU, memory: vm.Spec.Template.Spec.Resources.Memory.Value()}
	if m := vm.Status.MigrationState; m != nil {
		f.targetPodUID = string(m.TargetPodUID)
	}
	return f
}

// activateLaunchers sends the VM's waiting launcher pods to the queue.
func (p *Plugin) activateLaunchers(vm *novacronv1.VirtualMachine) {
	sel := labels.SelectorFromSet(labels.Set{novacronv1.LabelComponent: novacronv1.ComponentLauncher, novacronv1.LabelVM: vm.Name})
	pods, err := p.handle.SharedInformerFactory().Core().V1().Pods().Lister().Pods(vm.Namespace).List(sel)
	if err != nil {
		return
	}
	waiting := map[string]*corev1.Pod{}
	for _, pod := range pods {
		if pod.Spec.NodeName == "" && vm.LaunchedBy(pod) {
			waiting[pod.Namespace+"/"+pod.Name] = pod
		}
	}
	if len(waiting) > 0 {
		p.handle.Activate(klog.Background(), waiting)
	}
}

// indexByNamespace lets activateLaunchers list a VM's pods in its namespace;
// the scheduler's own pod informer has no index for that (another profile's
// instance of this plugin may have added it already).
func indexByNamespace(ctx context.Context, pods cache.SharedIndexInformer) {
	if _, ok := pods.GetIndexer().GetIndexers()[cache.NamespaceIndex]; ok {
		return
	}
	if err := pods.AddIndexers(cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}); err != nil {
		klog.FromContext(ctx).Info("pods are listed without a namespace index", "reason", err)
	}
}
