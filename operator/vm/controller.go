// Package vm is the VirtualMachine controller: it reserves a VM's capacity with
// a launcher pod, waits for the scheduler to bind it, and then runs the VM on
// that node's hypervisor through the provider interface, following
// spec.running, running lifecycle hooks and reporting status and events.
package vm

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/hypervisors"
	"github.com/novacron/operator/operator/metrics"
	"github.com/novacron/operator/operator/provider"
)

// Finalizer keeps a VM until its domain, disks and launcher pod are gone.
const Finalizer = "novacron.io/vm-cleanup"

// NodeNameIndex indexes VMs by status.nodeName (in the manager's cache), to
// find the VMs on a node.
const NodeNameIndex = "status.nodeName"

// Reconciler runs VirtualMachines on node hypervisors.
type Reconciler struct {
	Client client.Client
	// APIReader reads objects the manager does not cache (the image catalog).
	APIReader   client.Reader
	Recorder    events.EventRecorder
	Hypervisors provider.Connector
	HTTPClient  *http.Client

	// Namespace is the operator's namespace, where the image catalog lives.
	Namespace string
	Launcher  LauncherConfig
	// StopGracePeriod is how long a guest gets to power off after ACPI shutdown
	// before it is forced off.
	StopGracePeriod time.Duration
	// StatsInterval is how often a running VM's usage metrics are refreshed.
	StatsInterval time.Duration
	// UnreachableRetry is how soon an unreachable hypervisor is tried again.
	UnreachableRetry time.Duration
	// SerialLogDir is the folder on each node where guests' serial consoles go.
	SerialLogDir string

	cpuSamples sync.Map // namespace/name -> cpuSample
}

type cpuSample struct {
	cpu time.Duration
	at  time.Time
}

// +kubebuilder:rbac:groups=novacron.io,resources=virtualmachines,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=novacron.io,resources=virtualmachines/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=novacron.io,resources=virtualmachines/finalizers,verbs=update
// +kubebuilder:rbac:groups=novacron.io,resources=hypervisors,verbs=get;list;watch
// +kubebuilder:rbac:groups=novacron.io,resources=virtualmachinesnapshots,verbs=deletecollection
// +kubebuilder:rbac:groups=novacron.io,resources=virtualmachinerestores,verbs=get
// +kubebuilder:rbac:groups=novacron.io,resources=virtualmachinemigrations,verbs=get
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get
// +kubebuilder:rbac:groups=k8s.cni.cncf.io,resources=network-attachment-definitions,verbs=get
// +kubebuilder:rbac:groups=batch,resources=jobs,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// SetupWithManager registers the controller.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager, maxConcurrent int) error {
	if r.StopGracePeriod == 0 {
		r.StopGracePeriod = 2 * time.Minute
	}
	if r.StatsInterval == 0 {
		r.StatsInterval = 30 * time.Second
	}
	if r.UnreachableRetry == 0 {
		r.UnreachableRetry = 10 * time.Second
	}
	if r.HTTPClient == nil {
		r.HTTPClient = &http.Client{}
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &novacronv1.VirtualMachine{}, NodeNameIndex, func(o client.Object) []string {
		if n := o.(*novacronv1.VirtualMachine).Status.NodeName; n != "" {
			return []string{n}
		}
		return nil
	}); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("virtualmachine").
		For(&novacronv1.VirtualMachine{}).
		Owns(&corev1.Pod{}).
		Owns(&batchv1.Job{}).
		Watches(&novacronv1.Hypervisor{}, handler.EnqueueRequestsFromMapFunc(r.vmsOnHypervisor),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: maxConcurrent}).
		Complete(metrics.Instrument("virtualmachine", r))
}

func (r *Reconciler) vmsOnHypervisor(ctx context.Context, o client.Object) []reconcile.Request {
	var vms novacronv1.VirtualMachineList
	if err := r.Client.List(ctx, &vms, client.MatchingFields{NodeNameIndex: o.GetName()}); err != nil {
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(vms.Items))
	for _, vm := range vms.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: vm.Namespace, Name: vm.Name}})
	}
	return reqs
}

// Reconcile brings one VM towards its spec. It may be stopped at any line and
// run again: every side effect on a hypervisor is preceded by the status that
// names the node it happens on.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	vm := &novacronv1.VirtualMachine{}
	if err := r.Client.Get(ctx, req.NamespacedName, vm); err != nil {
		if apierrors.IsNotFound(err) {
			metrics.ForgetVM(req.Namespace, req.Name)
			r.cpuSamples.Delete(req.String())
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	before := vm.Status.DeepCopy()

	var res ctrl.Result
	var err error
	switch {
	case !vm.DeletionTimestamp.IsZero():
		res, err = r.finalize(ctx, vm)
		if err == nil && !controllerutil.ContainsFinalizer(vm, Finalizer) {
			return res, nil // gone; nothing left to write status to
		}
	case !controllerutil.ContainsFinalizer(vm, Finalizer):
		controllerutil.AddFinalizer(vm, Finalizer)
		return ctrl.Result{}, r.Client.Update(ctx, vm)
	case r.restoring(ctx, vm):
		// A restore is reverting the domain; it hands the VM back when done.
		return ctrl.Result{RequeueAfter: time.Second}, nil
	case r.migrating(ctx, vm):
		// A migration moves the domain; it hands the VM back, on its new
		// node or the old one, when done.
		return ctrl.Result{RequeueAfter: time.Second}, nil
	case vm.Spec.Running == nil || *vm.Spec.Running:
		res, err = r.ensureRunning(ctx, vm)
	default:
		res, err = r.ensureStopped(ctx, vm)
	}

	var spec *specError
	if errors.As(err, &spec) {
		// Retrying cannot fix it: show it and wait for a change (or a catalog
		// edit, which the slow requeue picks up).
		r.setPhase(vm, novacronv1.VMFailed)
		r.setCondition(vm, novacronv1.ConditionReady, metav1.ConditionFalse, spec.reason, spec.Error())
		if before.Phase != novacronv1.VMFailed || conditionMessage(before.Conditions, novacronv1.ConditionReady) != spec.Error() {
			r.Recorder.Eventf(vm, nil, corev1.EventTypeWarning, spec.reason, "Start", "%s", spec.Error())
		}
		res, err = ctrl.Result{RequeueAfter: time.Minute}, nil
	} else if errors.Is(err, provider.ErrUnreachable) {
		r.markUnreachable(vm, before, err)
		res, err = ctrl.Result{RequeueAfter: r.UnreachableRetry}, nil
	}

	vm.Status.ObservedGeneration = vm.Generation
	if !equality.Semantic.DeepEqual(before, &vm.Status) {
		if uerr := r.Client.Status().Update(ctx, vm); uerr != nil {
			err = errors.Join(err, uerr)
		}
	}
	// The VM is gone: its deletion brings the next reconcile, so this is not
	// worth an error in the log. (A conflict, a newer version on its way, is
	// retried by metrics.Instrument.)
	if apierrors.IsNotFound(err) {
		return ctrl.Result{RequeueAfter: 100 * time.Millisecond}, nil
	}
	return res, err
}

// ensureRunning drives a VM whose spec says running: true.
func (r *Reconciler) ensureRunning(ctx context.Context, vm *novacronv1.VirtualMachine) (ctrl.Result, error) {
	pod, err := r.launcherPod(ctx, vm)
	if err != nil {
		return ctrl.Result{}, err
	}
	if pod == nil {
		pools, err := r.vfPools(ctx, vm)
		if err != nil {
			return ctrl.Result{}, err
		}
		pod = BuildLauncherPod(vm, r.Launcher, pools)
		if err := r.Client.Create(ctx, pod); apierrors.IsAlreadyExists(err) {
			// The cache has not seen our own pod yet; its event brings us back.
			return ctrl.Result{}, nil
		} else if err != nil {
			return ctrl.Result{}, fmt.Errorf("creating launcher pod for VM %s/%s: %w", vm.Namespace, vm.Name, err)
		}
		r.setPhase(vm, novacronv1.VMScheduling)
		r.setCondition(vm, novacronv1.VMConditionScheduled, metav1.ConditionFalse, "Pending", fmt.Sprintf("launcher pod %s created; waiting for scheduler %s", pod.Name, pod.Spec.SchedulerName))
		r.Recorder.Eventf(vm, nil, corev1.EventTypeNormal, "LauncherPodCreated", "Schedule", "created launcher pod %s for scheduler %s", pod.Name, pod.Spec.SchedulerName)
		return ctrl.Result{}, nil
	}
	if !pod.DeletionTimestamp.IsZero() {
		r.setPhase(vm, novacronv1.VMPending)
		return ctrl.Result{}, nil // its deletion brings us back
	}
	node := pod.Spec.NodeName
	if node == "" {
		reason, msg := schedulingMessage(pod)
		if r.setCondition(vm, novacronv1.VMConditionScheduled, metav1.ConditionFalse, reason, msg) && reason == corev1.PodReasonUnschedulable {
			r.Recorder.Eventf(vm, nil, corev1.EventTypeWarning, "Unschedulable", "Schedule", "%s", msg)
		}
		r.setPhase(vm, novacronv1.VMScheduling)
		return ctrl.Result{}, nil
	}
	if vm.Status.NodeName != "" && vm.Status.NodeName != node {
		// The VM's domain and disks are on another node; this pod reserves the
		// wrong one. Replace it with one pinned to the VM's node.
		r.Recorder.Eventf(vm, nil, corev1.EventTypeWarning, "WrongNode", "Schedule", "launcher pod %s is on node %s but the VM lives on node %s; replacing the pod", pod.Name, node, vm.Status.NodeName)
		return ctrl.Result{}, client.IgnoreNotFound(r.Client.Delete(ctx, pod))
	}
	r.setCondition(vm, novacronv1.VMConditionScheduled, metav1.ConditionTrue, "Scheduled", fmt.Sprintf("launcher pod %s is bound to node %s", pod.Name, node))
	vm.Status.LauncherPod = pod.Name
	if vm.Status.NodeName == "" {
		// Record the node before touching its hypervisor, so that a restarted
		// operator knows where a domain may already exist.
		vm.Status.NodeName = node
		r.setPhase(vm, novacronv1.VMScheduled)
		if err := r.Client.Status().Update(ctx, vm); err != nil {
			return ctrl.Result{}, err
		}
		r.Recorder.Eventf(vm, nil, corev1.EventTypeNormal, "Scheduled", "Schedule", "placed on node %s", node)
	}

	hvObj, hv, err := r.hypervisor(ctx, node)
	if err != nil {
		return ctrl.Result{}, err
	}
	r.markReachable(vm, node)

	assignment, err := deviceAssignment(pod)
	if err != nil {
		return ctrl.Result{}, err
	}
	vm.Status.Devices = assignment.GPUs
	vm.Status.Interfaces = observedInterfaces(vm, assignment)

	name := DomainName(vm)
	state, err := hv.State(ctx, name)
	if err != nil && !errors.Is(err, provider.ErrNotFound) {
		return ctrl.Result{}, err
	}
	switch state {
	case provider.StateRunning, provider.StatePaused:
		r.setPhase(vm, novacronv1.VMRunning)
		if state == provider.StatePaused {
			r.setCondition(vm, novacronv1.ConditionReady, metav1.ConditionFalse, "Paused", "the domain is paused on the hypervisor")
		} else {
			r.setCondition(vm, novacronv1.ConditionReady, metav1.ConditionTrue, "Running", fmt.Sprintf("running on node %s", node))
		}
		r.recordStats(ctx, vm, hv, node)
		return ctrl.Result{RequeueAfter: r.StatsInterval}, nil
	case provider.StateShutdown:
		r.setPhase(vm, novacronv1.VMStopping)
		return ctrl.Result{RequeueAfter: time.Second}, nil
	case provider.StateCrashed:
		r.Recorder.Eventf(vm, nil, corev1.EventTypeWarning, "Crashed", "Start", "the guest crashed on node %s; starting it again", node)
	}

	// Not running: (re)define from the current spec, run preStart, then start.
	if failed, err := r.hookFailed(ctx, vm, "PreStartHookFailed"); err != nil || failed {
		if err != nil {
			return ctrl.Result{}, err
		}
		r.setPhase(vm, novacronv1.VMStopped)
		return ctrl.Result{}, nil
	}
	domain, err := r.buildDomain(ctx, vm, pod, hvObj, hv)
	if err != nil {
		return ctrl.Result{}, err
	}
	if err := hv.Define(ctx, domain); err != nil {
		if errors.Is(err, provider.ErrConflict) {
			return ctrl.Result{}, specErrorf("DomainConflict", "node %s already has a domain named %s that is not this VM's (another UUID); remove it from the hypervisor or rename the VM: %v", node, name, err)
		}
		return ctrl.Result{}, err
	}
	if state == "" {
		r.Recorder.Eventf(vm, nil, corev1.EventTypeNormal, "Defined", "Start", "defined domain %s on node %s", name, node)
	}
	r.setPhase(vm, novacronv1.VMStarting)
	if lc := vm.Spec.Template.Spec.Lifecycle; lc != nil && lc.PreStart != nil {
		outcome, herr := r.runHook(ctx, vm, hookPreStart, lc.PreStart)
		switch outcome {
		case hookRunning:
			return ctrl.Result{}, herr
		case hookFailed:
			if lc.PreStart.FailurePolicy == novacronv1.HookIgnore {
				r.Recorder.Eventf(vm, nil, corev1.EventTypeWarning, "HookFailed", "Start", "preStart hook failed (ignored by its failure policy): %v", herr)
			} else {
				r.setCondition(vm, novacronv1.VMConditionHooksSucceeded, metav1.ConditionFalse, "PreStartHookFailed", fmt.Sprintf("preStart hook failed, so the VM stays stopped (change the spec to try again): %v", herr))
				r.setCondition(vm, novacronv1.ConditionReady, metav1.ConditionFalse, "PreStartHookFailed", "preStart hook failed")
				r.setPhase(vm, novacronv1.VMStopped)
				r.Recorder.Eventf(vm, nil, corev1.EventTypeWarning, "HookFailed", "Start", "preStart hook failed; the VM stays stopped: %v", herr)
				return ctrl.Result{}, nil
			}
		default:
			r.setCondition(vm, novacronv1.VMConditionHooksSucceeded, metav1.ConditionTrue, "PreStartHookSucceeded", "preStart hook succeeded")
		}
	}
	if err := hv.Start(ctx, name); err != nil {
		return ctrl.Result{}, err
	}
	r.Recorder.Eventf(vm, nil, corev1.EventTypeNormal, "Started", "Start", "started domain %s on node %s", name, node)
	r.setPhase(vm, novacronv1.VMRunning)
	r.setCondition(vm, novacronv1.ConditionReady, metav1.ConditionTrue, "Running", fmt.Sprintf("running on node %s", node))
	return ctrl.Result{RequeueAfter: r.StatsInterval}, nil
}

// ensureStopped drives a VM whose spec says running: false: the guest powers
// off, its disks and definition stay on its node, and the launcher pod goes so
// the node's capacity is free while the VM is stopped.
func (r *Reconciler) ensureStopped(ctx context.Context, vm *novacronv1.VirtualMachine) (ctrl.Result, error) {
	if node := vm.Status.NodeName; node != "" {
		_, hv, err := r.hypervisor(ctx, node)
		if err != nil {
			return ctrl.Result{}, err
		}
		r.markReachable(vm, node)
		state, err := hv.State(ctx, DomainName(vm))
		if err != nil && !errors.Is(err, provider.ErrNotFound) {
			return ctrl.Result{}, err
		}
		if state == provider.StateRunning || state == provider.StatePaused || state == provider.StateShutdown {
			if failed, err := r.hookFailed(ctx, vm, "PreStopHookFailed"); err != nil || failed {
				return ctrl.Result{}, err
			}
			if lc := vm.Spec.Template.Spec.Lifecycle; lc != nil && lc.PreStop != nil {
				outcome, herr := r.runHook(ctx, vm, hookPreStop, lc.PreStop)
				switch {
				case outcome == hookRunning:
					r.setPhase(vm, novacronv1.VMStopping)
					return ctrl.Result{}, herr
				case outcome == hookFailed && lc.PreStop.FailurePolicy != novacronv1.HookIgnore:
					r.setCondition(vm, novacronv1.VMConditionHooksSucceeded, metav1.ConditionFalse, "PreStopHookFailed", fmt.Sprintf("preStop hook failed, so the VM keeps running (change the spec to try again): %v", herr))
					r.Recorder.Eventf(vm, nil, corev1.EventTypeWarning, "HookFailed", "Stop", "preStop hook failed; the VM keeps running: %v", herr)
					return ctrl.Result{}, nil
				case outcome == hookFailed:
					r.Recorder.Eventf(vm, nil, corev1.EventTypeWarning, "HookFailed", "Stop", "preStop hook failed (ignored by its failure policy): %v", herr)
				}
			}
			r.setPhase(vm, novacronv1.VMStopping)
			if err := r.Client.Status().Update(ctx, vm); err != nil {
				return ctrl.Result{}, err
			}
			r.Recorder.Eventf(vm, nil, corev1.EventTypeNormal, "Stopping", "Stop", "shutting down the guest (forced off after %s)", r.StopGracePeriod)
			if err := hv.Shutdown(ctx, DomainName(vm), r.StopGracePeriod); err != nil {
				return ctrl.Result{}, err
			}
			r.Recorder.Eventf(vm, nil, corev1.EventTypeNormal, "Stopped", "Stop", "the guest is off on node %s", node)
		}
	}
	pod, err := r.launcherPod(ctx, vm)
	if err != nil {
		return ctrl.Result{}, err
	}
	if pod != nil && pod.DeletionTimestamp.IsZero() {
		if err := r.Client.Delete(ctx, pod); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, err
		}
	}
	vm.Status.LauncherPod = ""
	metrics.ForgetVM(vm.Namespace, vm.Name)
	r.setPhase(vm, novacronv1.VMStopped)
	r.setCondition(vm, novacronv1.ConditionReady, metav1.ConditionFalse, "Stopped", "spec.running is false")
	return ctrl.Result{}, nil
}

// finalize removes the VM's domain and disks, then lets the VM go. While the
// hypervisor cannot be reached the VM stays, so no domain is left behind
// untracked.
func (r *Reconciler) finalize(ctx context.Context, vm *novacronv1.VirtualMachine) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(vm, Finalizer) {
		return ctrl.Result{}, nil
	}
	if node := vm.Status.NodeName; node != "" {
		hvObj, hv, err := r.hypervisor(ctx, node)
		switch {
		case apierrors.IsNotFound(errors.Unwrap(err)):
			r.Recorder.Eventf(vm, nil, corev1.EventTypeWarning, "HypervisorGone", "Delete", "Hypervisor %s no longer exists; domain %s may remain on that node", node, DomainName(vm))
		case err != nil:
			return ctrl.Result{}, err
		default:
			name := DomainName(vm)
			state, err := hv.State(ctx, name)
			if err != nil && !errors.Is(err, provider.ErrNotFound) {
				return ctrl.Result{}, err
			}
			if state == provider.StateRunning || state == provider.StatePaused {
				if lc := vm.Spec.Template.Spec.Lifecycle; lc != nil && lc.PreStop != nil {
					// A delete cannot be refused: a failed preStop is reported, not obeyed.
					outcome, herr := r.runHook(ctx, vm, hookPreStop, lc.PreStop)
					if outcome == hookRunning {
						r.setPhase(vm, novacronv1.VMStopping)
						return ctrl.Result{}, herr
					}
					if outcome == hookFailed {
						r.Recorder.Eventf(vm, nil, corev1.EventTypeWarning, "HookFailed", "Delete", "preStop hook failed; deleting anyway: %v", herr)
					}
				}
				if err := hv.Shutdown(ctx, name, r.StopGracePeriod); err != nil {
					return ctrl.Result{}, err
				}
			}
			if err := hv.Undefine(ctx, name); err != nil {
				return ctrl.Result{}, err
			}
			pool := hypervisors.Pool(hvObj)
			for _, vol := range VolumeNames(vm) {
				if err := hv.DeleteVolume(ctx, pool, vol); err != nil {
					return ctrl.Result{}, err
				}
			}
			r.Recorder.Eventf(vm, nil, corev1.EventTypeNormal, "Deleted", "Delete", "removed domain %s and its disks from node %s", name, node)
		}
	}
	if pod, err := r.launcherPod(ctx, vm); err != nil {
		return ctrl.Result{}, err
	} else if pod != nil {
		if err := r.Client.Delete(ctx, pod); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, err
		}
	}
	// Its snapshots lived in its disks; their objects go too (each one's
	// finalizer finds its domain gone).
	if err := r.Client.DeleteAllOf(ctx, &novacronv1.VirtualMachineSnapshot{}, client.InNamespace(vm.Namespace),
		client.MatchingLabels{novacronv1.LabelVM: vm.Name}); err != nil {
		return ctrl.Result{}, fmt.Errorf("deleting the snapshots of VM %s/%s: %w", vm.Namespace, vm.Name, err)
	}
	metrics.ForgetDeletedVM(vm.Namespace, vm.Name)
	controllerutil.RemoveFinalizer(vm, Finalizer)
	return ctrl.Result{}, client.IgnoreNotFound(r.Client.Update(ctx, vm))
}

func (r *Reconciler) launcherPod(ctx context.Context, vm *novacronv1.VirtualMachine) (*corev1.Pod, error) {
	// After a migration the VM's pod is the migration's target pod; once
	// that is gone, a new one has the usual name.
	names := []string{LauncherPodName(vm.Name)}
	if n := vm.Status.LauncherPod; n != "" && n != names[0] {
		names = append([]string{n}, names...)
	}
	pod := &corev1.Pod{}
	var err error
	for _, name := range names {
		if err = r.Client.Get(ctx, client.ObjectKey{Namespace: vm.Namespace, Name: name}, pod); !apierrors.IsNotFound(err) {
			break
		}
	}
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if !metav1.IsControlledBy(pod, vm) {
		return nil, specErrorf("LauncherPodConflict", "pod %s exists but does not belong to this VM; delete or rename it", pod.Name)
	}
	return pod, nil
}

// migrating says whether a VirtualMachineMigration holds the VM. A
// migration state whose migration is gone or finished is dropped.
func (r *Reconciler) migrating(ctx context.Context, vm *novacronv1.VirtualMachine) bool {
	st := vm.Status.MigrationState
	if st == nil {
		return false
	}
	m := &novacronv1.VirtualMachineMigration{}
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: vm.Namespace, Name: st.MigrationName}, m)
	if err == nil && m.Spec.VMName == vm.Name && !m.Status.Phase.Done() {
		r.setPhase(vm, novacronv1.VMMigrating)
		return true
	}
	if err != nil && !apierrors.IsNotFound(err) {
		return true // unsure: leave the domain alone and look again
	}
	vm.Status.MigrationState = nil
	return false
}

// restoring says whether a VirtualMachineRestore holds the VM's domain. A
// guard whose restore is gone or finished is dropped, so a deleted restore
// never strands its VM.
func (r *Reconciler) restoring(ctx context.Context, vm *novacronv1.VirtualMachine) bool {
	name := vm.Annotations[novacronv1.AnnotationRestoring]
	if name == "" {
		return false
	}
	rs := &novacronv1.VirtualMachineRestore{}
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: vm.Namespace, Name: name}, rs)
	if err == nil && rs.Spec.VMName == vm.Name && rs.Status.Phase != novacronv1.RestoreSucceeded && rs.Status.Phase != novacronv1.RestoreFailed {
		r.setCondition(vm, novacronv1.ConditionReady, metav1.ConditionFalse, "Restoring", "restore "+name+" is reverting the VM to a snapshot")
		return true
	}
	if err != nil && !apierrors.IsNotFound(err) {
		return true // unsure: leave the domain alone and look again
	}
	patch := client.MergeFrom(vm.DeepCopy())
	delete(vm.Annotations, novacronv1.AnnotationRestoring)
	_ = r.Client.Patch(ctx, vm, patch)
	return false
}

// hypervisor finds the node's Hypervisor object and connects to it.
func (r *Reconciler) hypervisor(ctx context.Context, node string) (*novacronv1.Hypervisor, provider.Hypervisor, error) {
	return hypervisors.ForNode(ctx, r.Client, r.Hypervisors, node)
}

func (r *Reconciler) markUnreachable(vm *novacronv1.VirtualMachine, before *novacronv1.VirtualMachineStatus, err error) {
	r.setPhase(vm, novacronv1.VMUnknown)
	r.setCondition(vm, novacronv1.VMConditionHypervisorReachable, metav1.ConditionFalse, "Unreachable", err.Error())
	r.setCondition(vm, novacronv1.ConditionReady, metav1.ConditionUnknown, "HypervisorUnreachable", "the state of the VM is unknown while its hypervisor cannot be reached")
	if before.Phase != novacronv1.VMUnknown {
		r.Recorder.Eventf(vm, nil, corev1.EventTypeWarning, "HypervisorUnreachable", "Connect", "%v", err)
	}
}

func (r *Reconciler) markReachable(vm *novacronv1.VirtualMachine, node string) {
	if r.setCondition(vm, novacronv1.VMConditionHypervisorReachable, metav1.ConditionTrue, "Connected", fmt.Sprintf("connected to the hypervisor of node %s", node)) &&
		vm.Status.Phase == novacronv1.VMUnknown {
		r.Recorder.Eventf(vm, nil, corev1.EventTypeNormal, "HypervisorReachable", "Connect", "the hypervisor of node %s answers again", node)
	}
}

// recordStats refreshes the VM's CPU and memory gauges from domain stats.
func (r *Reconciler) recordStats(ctx context.Context, vm *novacronv1.VirtualMachine, hv provider.Hypervisor, node string) {
	stats, err := hv.Stats(ctx, DomainName(vm))
	if err != nil {
		log.FromContext(ctx).V(1).Info("reading domain stats", "error", err)
		return
	}
	now := time.Now()
	key := vm.Namespace + "/" + vm.Name
	metrics.RecordMemory(vm.Namespace, vm.Name, node, float64(stats.MemoryUsedBytes))
	if prev, ok := r.cpuSamples.Load(key); ok {
		p := prev.(cpuSample)
		if dt := now.Sub(p.at); dt > 0 && stats.CPUTime >= p.cpu {
			metrics.RecordCPU(vm.Namespace, vm.Name, node, float64(stats.CPUTime-p.cpu)/float64(dt))
		}
	}
	r.cpuSamples.Store(key, cpuSample{cpu: stats.CPUTime, at: now})
}

// setPhase changes the phase; the change itself is visible in kubectl get -w.
func (r *Reconciler) setPhase(vm *novacronv1.VirtualMachine, p novacronv1.VMPhase) {
	vm.Status.Phase = p
}

// setCondition sets a condition and says whether it changed.
func (r *Reconciler) setCondition(vm *novacronv1.VirtualMachine, typ string, status metav1.ConditionStatus, reason, msg string) bool {
	return meta.SetStatusCondition(&vm.Status.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: vm.Generation,
	})
}

// hookFailed says whether a hook failed for the VM's current spec, in which
// case it is not run again until the spec changes. It reads the VM from the
// API server, not the cache: a cache that has not yet seen the failure would
// otherwise run the hook again.
func (r *Reconciler) hookFailed(ctx context.Context, vm *novacronv1.VirtualMachine, reason string) (bool, error) {
	fresh := &novacronv1.VirtualMachine{}
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(vm), fresh); err != nil {
		return false, err
	}
	for _, v := range []*novacronv1.VirtualMachine{vm, fresh} {
		c := meta.FindStatusCondition(v.Status.Conditions, novacronv1.VMConditionHooksSucceeded)
		if c != nil && c.Status == metav1.ConditionFalse && c.Reason == reason && c.ObservedGeneration == vm.Generation {
			if v == fresh {
				vm.Status.Conditions = fresh.Status.Conditions
			}
			return true, nil
		}
	}
	return false, nil
}

func conditionMessage(conds []metav1.Condition, typ string) string {
	if c := meta.FindStatusCondition(conds, typ); c != nil {
		return c.Message
	}
	return ""
}
