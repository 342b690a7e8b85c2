// Package vm is the VirtualMachine controller: it reserves a VM's capacity with
// a launcher pod, waits for the scheduler to bind it, and then runs the VM on
// that node's hypervisor through the provider interface, following
// spec.running, running lifecycle hooks and reporting status and events.
//
// controller.go reads the VM and decides who acts on it; running.go and
// stopped.go drive it towards spec.running; status.go says what happened.
package vm

import (
	"context"
	"errors"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/conflict"
	"github.com/novacron/operator/operator/domain"
	"github.com/novacron/operator/operator/hooks"
	"github.com/novacron/operator/operator/hypervisors"
	"github.com/novacron/operator/operator/launcher"
	"github.com/novacron/operator/operator/metrics"
	"github.com/novacron/operator/operator/provider"
	"github.com/novacron/operator/operator/usage"
)

// Finalizer keeps a VM until its domain, disks and launcher pod are gone.
const Finalizer = "novacron.io/vm-cleanup"

// Reconciler runs VirtualMachines on node hypervisors. It relies on the
// manager's hypervisors.NodeNameIndex.
type Reconciler struct {
	Client client.Client
	// APIReader reads past the cache where a stale read would act twice (a
	// failed hook, a migration or restore that holds the VM).
	APIReader   client.Reader
	Recorder    events.EventRecorder
	Hypervisors provider.Connector
	// Domains makes a VM's disks and domain definition on its node.
	Domains *domain.Builder
	// Hooks calls the VMs' HTTP hooks in the background.
	Hooks    *hooks.Caller
	Launcher launcher.Config
	// Usage receives running VMs' measured use (for the rebalancer).
	Usage *usage.Store

	// StopGracePeriod is how long a guest gets to power off after ACPI shutdown
	// before it is forced off.
	StopGracePeriod time.Duration
	// StatsInterval is how often a running VM's usage metrics are refreshed.
	StatsInterval time.Duration
	// UnreachableRetry is how soon an unreachable hypervisor is tried again.
	UnreachableRetry time.Duration
}

// +kubebuilder:rbac:groups=novacron.io,resources=virtualmachines,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=novacron.io,resources=virtualmachines/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=novacron.io,resources=virtualmachines/finalizers,verbs=update
// +kubebuilder:rbac:groups=novacron.io,resources=hypervisors,verbs=get;list;watch
// +kubebuilder:rbac:groups=novacron.io,resources=virtualmachinesnapshots,verbs=deletecollection
// +kubebuilder:rbac:groups=novacron.io,resources=virtualmachinerestores,verbs=get
// +kubebuilder:rbac:groups=novacron.io,resources=virtualmachinemigrations,verbs=get;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;create;delete;patch
// +kubebuilder:rbac:groups="",namespace=novacron-system,resources=configmaps,verbs=get
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get
// +kubebuilder:rbac:groups=k8s.cni.cncf.io,resources=network-attachment-definitions,verbs=get
// +kubebuilder:rbac:groups=batch,resources=jobs,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups="",resources=serviceaccounts,verbs=create
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// SetupWithManager registers the controller.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager, maxConcurrent int) error {
	r.setDefaults()
	return ctrl.NewControllerManagedBy(mgr).
		Named("virtualmachine").
		For(&novacronv1.VirtualMachine{}).
		Owns(&corev1.Pod{}).
		Owns(&batchv1.Job{}).
		WatchesRawSource(source.Channel(r.Hooks.Done, &handler.TypedEnqueueRequestForObject[*novacronv1.VirtualMachine]{})).
		Watches(&novacronv1.Hypervisor{}, handler.EnqueueRequestsFromMapFunc(r.vmsOnHypervisor),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&resourceapi.ResourceSlice{}, handler.EnqueueRequestsFromMapFunc(r.vmsOnSliceNode)).
		WithOptions(controller.Options{MaxConcurrentReconciles: maxConcurrent}).
		Complete(conflict.Retry(metrics.Instrument("virtualmachine", r)))
}

func (r *Reconciler) setDefaults() {
	if r.StopGracePeriod == 0 {
		r.StopGracePeriod = 2 * time.Minute
	}
	if r.StatsInterval == 0 {
		r.StatsInterval = 30 * time.Second
	}
	if r.UnreachableRetry == 0 {
		r.UnreachableRetry = 10 * time.Second
	}
	if r.Hooks == nil {
		r.Hooks = hooks.NewCaller(hooks.Egress{}.Client(), r.APIReader)
	}
	if r.Usage == nil {
		r.Usage = &usage.Store{}
	}
}

func (r *Reconciler) vmsOnHypervisor(ctx context.Context, o client.Object) []reconcile.Request {
	return r.vmsOnNode(ctx, o.GetName())
}

func (r *Reconciler) vmsOnNode(ctx context.Context, node string) []reconcile.Request {
	vms, err := hypervisors.VMsOn(ctx, r.Client, node)
	if err != nil {
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(vms))
	for _, vm := range vms {
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
			r.Usage.Forget(req.Namespace, req.Name)
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

	var spec *domain.SpecError
	if errors.As(err, &spec) {
		// Retrying cannot fix it: show it and wait for a change (or a catalog
		// edit, which the slow requeue picks up).
		r.showSpecError(ctx, vm, before, spec)
		res, err = ctrl.Result{RequeueAfter: time.Minute}, nil
	} else if errors.Is(err, provider.ErrUnreachable) {
		r.markUnreachable(ctx, vm, before, err)
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
	// retried by conflict.Retry.)
	if apierrors.IsNotFound(err) {
		return ctrl.Result{RequeueAfter: 100 * time.Millisecond}, nil
	}
	return res, err
}

// launcherPod finds the VM's launcher pod, nil when there is none.
func (r *Reconciler) launcherPod(ctx context.Context, vm *novacronv1.VirtualMachine) (*corev1.Pod, error) {
	// After a migration the VM's pod is the migration's target pod; once
	// that is gone, a new one has the usual name.
	names := []string{launcher.PodName(vm.Name)}
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
		return nil, domain.SpecErrorf(novacronv1.ReasonLauncherPodConflict, "pod %s exists but does not belong to this VM; delete or rename it", pod.Name)
	}
	switch {
	case pod.UID == vm.Status.LauncherPodUID:
	case vm.AdoptsLauncherPod(pod):
		// Made by an operator from before pods were recorded and hashed:
		// adopted once, so an upgrade does not disturb running VMs (their
		// spec could not change while the pod was bound).
		patch := client.MergeFrom(pod.DeepCopy())
		metav1.SetMetaDataAnnotation(&pod.ObjectMeta, novacronv1.AnnotationPodSpecHash, launcher.SpecHash(vm))
		if err := r.Client.Patch(ctx, pod, patch); err != nil {
			return nil, err
		}
		vm.Status.LauncherPodUID = pod.UID
	default:
		// The cache may bring the pod we just made before the status that
		// records it: ask the API server before calling the pod foreign.
		fresh := &novacronv1.VirtualMachine{}
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(vm), fresh); err != nil {
			return nil, err
		}
		if fresh.Status.LauncherPodUID == pod.UID {
			return pod, errCacheBehind
		}
		return pod, errNotOurs
	}
	return pod, nil
}

// errCacheBehind is the VM's own launcher pod, which the cached VM does not
// record yet; the VM is looked at again once the cache has caught up.
var errCacheBehind = errors.New("the cached VM does not record its launcher pod yet")

// errNotOurs is a launcher pod that claims the VM (its controller reference)
// but is not the pod NovaCron made: someone else's, or one whose record was
// lost between its creation and the status write. It is replaced, never used.
var errNotOurs = errors.New("not the launcher pod NovaCron made for the VM")

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
		r.setPhase(ctx, vm, novacronv1.VMMigrating)
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
		r.setCondition(vm, novacronv1.ConditionReady, metav1.ConditionFalse, novacronv1.ReasonRestoring, "restore "+name+" is reverting the VM to a snapshot")
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
