package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/devices"
	"github.com/novacron/operator/devices/discovery"
	"github.com/novacron/operator/operator/launcher"
	"github.com/novacron/operator/operator/manager"
	"github.com/novacron/operator/operator/provider"
)

// Poll is how often the helpers below look at the API server.
const Poll = 20 * time.Millisecond

// StartOperator runs the operator, wired as cmd/novacron-operator wires it,
// until the returned stop function (also registered as a cleanup) is called.
func (e *Env) StartOperator(t testing.TB, opts manager.Options, hypervisors provider.Connector) (stop func()) {
	t.Helper()
	stop, errs, err := e.RunOperator(opts, hypervisors)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stop()
		if err := <-errs; err != nil {
			t.Errorf("operator stopped: %v", err)
		}
	})
	return stop
}

// RunOperator runs the operator until stop is called; the channel then gives
// the manager's exit error.
func (e *Env) RunOperator(opts manager.Options, hypervisors provider.Connector) (stop func(), errs <-chan error, err error) {
	mgr, err := manager.New(e.Config, opts, hypervisors)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ch <- mgr.Start(ctx)
	}()
	var once sync.Once
	return func() { once.Do(func() { cancel(); wg.Wait() }) }, ch, nil
}

// FreeAddr returns a free loopback address for a server to listen on.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// WaitVM waits until the VM satisfies ok and returns it; on timeout it fails
// the test showing the VM's status.
func (e *Env) WaitVM(t testing.TB, key client.ObjectKey, timeout time.Duration, what string, ok func(*novacronv1.VirtualMachine) bool) *novacronv1.VirtualMachine {
	t.Helper()
	var last novacronv1.VirtualMachine
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if err := e.Client.Get(context.Background(), key, &last); err == nil && ok(&last) {
			return &last
		}
		time.Sleep(Poll)
	}
	status, _ := json.MarshalIndent(last.Status, "", "  ")
	t.Fatalf("VM %s: timed out waiting for %s; status:\n%s", key, what, status)
	return nil
}

// PhaseIs is true once the VM's status, up to date with its spec, shows p.
func PhaseIs(p novacronv1.VMPhase) func(*novacronv1.VirtualMachine) bool {
	return func(v *novacronv1.VirtualMachine) bool {
		return v.Status.Phase == p && v.Status.ObservedGeneration == v.Generation
	}
}

// LauncherPod waits for the VM's launcher pod.
func (e *Env) LauncherPod(t testing.TB, key client.ObjectKey, timeout time.Duration) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if e.Client.Get(context.Background(), client.ObjectKey{Namespace: key.Namespace, Name: launcher.PodName(key.Name)}, pod) == nil && pod.DeletionTimestamp.IsZero() {
			return pod
		}
		time.Sleep(Poll)
	}
	t.Fatalf("launcher pod of VM %s never appeared", key)
	return nil
}

// Bind does what kube-controller-manager and a scheduler do with a VM's
// launcher pod: with devices, makes the pod's claim from its
// ResourceClaimTemplate and allocates it those devices of node's
// devices.novacron.io pool, reserved for the pod; then binds the pod to node.
func (e *Env) Bind(t testing.TB, key client.ObjectKey, node string, devices *novacronv1.DeviceAssignment, timeout time.Duration) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	pod := e.LauncherPod(t, key, timeout)
	if devices != nil {
		e.allocate(t, key, pod, node, devices)
	}
	cs, err := kubernetes.NewForConfig(e.Config)
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.CoreV1().Pods(pod.Namespace).Bind(ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace},
		Target:     corev1.ObjectReference{Kind: "Node", Name: node},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return pod
}

// allocate makes and allocates the launcher pod's device claim: the GPUs go
// to the template's GPU requests in order, each VF to its network's request.
func (e *Env) allocate(t testing.TB, key client.ObjectKey, pod *corev1.Pod, node string, a *novacronv1.DeviceAssignment) {
	t.Helper()
	ctx := context.Background()
	if len(pod.Spec.ResourceClaims) != 1 || pod.Spec.ResourceClaims[0].ResourceClaimTemplateName == nil {
		t.Fatalf("launcher pod %s claims no devices", pod.Name)
	}
	tmpl := &resourceapi.ResourceClaimTemplate{}
	if err := e.Client.Get(ctx, client.ObjectKey{Namespace: pod.Namespace, Name: *pod.Spec.ResourceClaims[0].ResourceClaimTemplateName}, tmpl); err != nil {
		t.Fatal(err)
	}
	vm := &novacronv1.VirtualMachine{}
	if err := e.Client.Get(ctx, key, vm); err != nil {
		t.Fatal(err)
	}
	var sriov []string
	for _, n := range vm.Spec.Template.Spec.Networks {
		if n.Type == novacronv1.NetworkTypeSRIOV {
			sriov = append(sriov, n.Name)
		}
	}
	var results []resourceapi.DeviceRequestAllocationResult
	result := func(req, kind, pci string) {
		results = append(results, resourceapi.DeviceRequestAllocationResult{Request: req, Driver: discovery.DriverName, Pool: node, Device: discovery.DeviceName(kind, pci)})
	}
	gpus := a.GPUs
	for _, r := range tmpl.Spec.Spec.Devices.Requests {
		switch r.Exactly.DeviceClassName {
		case devices.GPUClass:
			for n := int64(0); n < r.Exactly.Count && len(gpus) > 0; n++ {
				result(r.Name, discovery.TypeGPU, gpus[0].PCIAddress)
				gpus = gpus[1:]
			}
		case devices.VFClass:
			var i int
			if _, err := fmt.Sscanf(r.Name, "vf-%d", &i); err != nil || i >= len(sriov) {
				t.Fatalf("request %s of template %s names no sr-iov network", r.Name, tmpl.Name)
			}
			if pci, ok := a.VFs[sriov[i]]; ok {
				result(r.Name, discovery.TypeVF, pci)
			}
		}
	}
	claim := &resourceapi.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name + "-" + devices.ClaimName, Namespace: pod.Namespace,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID, Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}}},
		Spec: tmpl.Spec.Spec,
	}
	if err := e.Client.Create(ctx, claim); err != nil {
		t.Fatal(err)
	}
	claim.Status.Allocation = &resourceapi.AllocationResult{Devices: resourceapi.DeviceAllocationResult{Results: results}}
	claim.Status.ReservedFor = []resourceapi.ResourceClaimConsumerReference{{Resource: "pods", Name: pod.Name, UID: pod.UID}}
	if err := e.Client.Status().Update(ctx, claim); err != nil {
		t.Fatal(err)
	}
	pod.Status.ResourceClaimStatuses = []corev1.PodResourceClaimStatus{{Name: devices.ClaimName, ResourceClaimName: &claim.Name}}
	if err := e.Client.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
}

// PatchRunning sets spec.running as `kubectl patch --type merge` would.
func (e *Env) PatchRunning(t testing.TB, key client.ObjectKey, running bool) {
	t.Helper()
	v := &novacronv1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace}}
	if err := e.Client.Patch(context.Background(), v, client.RawPatch(types.MergePatchType, fmt.Appendf(nil, `{"spec":{"running":%t}}`, running))); err != nil {
		t.Fatal(err)
	}
}

// NewVM is a running VM with cpu vCPUs and memory that boots Image, for a
// test to adjust before creating it.
func NewVM(ns, name string, cpu int32, memory string) *novacronv1.VirtualMachine {
	return &novacronv1.VirtualMachine{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: novacronv1.VirtualMachineSpec{Running: ptr.To(true), Template: novacronv1.VirtualMachineTemplateSpec{Spec: novacronv1.VirtualMachineInstanceSpec{
			Resources: novacronv1.VMResources{CPU: cpu, Memory: resource.MustParse(memory)},
			Image:     novacronv1.ImageSource{Source: "marketplace://" + Image},
		}}},
	}
}

// DeleteVMAndWait deletes the VM and waits until its finalizer let it go.
func (e *Env) DeleteVMAndWait(t testing.TB, key client.ObjectKey, timeout time.Duration) {
	t.Helper()
	ctx := context.Background()
	v := &novacronv1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace}}
	if err := e.Client.Delete(ctx, v); apierrors.IsNotFound(err) {
		return
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if apierrors.IsNotFound(e.Client.Get(ctx, key, v)) {
			return
		}
		time.Sleep(Poll)
	}
	t.Errorf("VM %s was not deleted within %s", key, timeout)
}
