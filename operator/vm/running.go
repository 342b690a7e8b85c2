package vm

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/devices"
	"github.com/novacron/operator/operator/domain"
	"github.com/novacron/operator/operator/launcher"
	"github.com/novacron/operator/operator/provider"
)

// runScope is what the phases of ensureRunning learn about a VM that should
// run, in the order they learn it.
type runScope struct {
	vm *novacronv1.VirtualMachine
	// pod is the VM's launcher pod, bound to node.
	pod  *corev1.Pod
	node string
	// hvObj and hv are node's Hypervisor object and a connection to it.
	hvObj *novacronv1.Hypervisor
	hv    provider.Hypervisor
	// devices are what novacron-scheduler assigned the VM on node.
	devices novacronv1.DeviceAssignment
	// state is the domain's state there, "" when it is not defined.
	state provider.DomainState
}

// runPhase moves a VM that should run one step on. done ends this reconcile
// with res and err; otherwise the next phase goes on.
type runPhase func(ctx context.Context, s *runScope) (res ctrl.Result, done bool, err error)

// ensureRunning drives a VM whose spec says running: true: reserve its
// capacity with a launcher pod, reach its node's hypervisor, see whether the
// domain already runs, and if not define it, run preStart and start it.
func (r *Reconciler) ensureRunning(ctx context.Context, vm *novacronv1.VirtualMachine) (ctrl.Result, error) {
	s := &runScope{vm: vm}
	for _, phase := range []runPhase{r.reserve, r.connect, r.observe, r.define, r.preStart, r.boot} {
		if res, done, err := phase(ctx, s); done || err != nil {
			return res, err
		}
	}
	return ctrl.Result{RequeueAfter: r.StatsInterval}, nil
}

// reserve makes sure the VM has a launcher pod bound to a node, and records
// that node before anything touches its hypervisor.
func (r *Reconciler) reserve(ctx context.Context, s *runScope) (ctrl.Result, bool, error) {
	vm := s.vm
	pod, err := r.launcherPod(ctx, vm)
	if errors.Is(err, errNotOurs) {
		return ctrl.Result{}, true, r.replaceForeignPod(ctx, vm, pod)
	}
	if errors.Is(err, errCacheBehind) {
		return ctrl.Result{RequeueAfter: 100 * time.Millisecond}, true, nil
	}
	if err != nil {
		return ctrl.Result{}, true, err
	}
	if pod == nil {
		err := r.createLauncherPod(ctx, vm)
		if errors.Is(err, errQuotaExceeded) {
			return ctrl.Result{RequeueAfter: quotaRetry}, true, nil
		}
		return ctrl.Result{}, true, err
	}
	if !pod.DeletionTimestamp.IsZero() {
		r.setPhase(ctx, vm, novacronv1.VMPending)
		return ctrl.Result{}, true, nil // its deletion brings us back
	}
	node := pod.Spec.NodeName
	if node == "" && !launcher.PodMatches(pod, vm) {
		return ctrl.Result{}, true, r.replaceStalePod(ctx, vm, pod)
	}
	if node == "" {
		reason, msg := launcher.SchedulingMessage(pod)
		if r.setCondition(vm, novacronv1.VMConditionScheduled, metav1.ConditionFalse, reason, msg) && reason == corev1.PodReasonUnschedulable {
			r.Recorder.Eventf(vm, nil, corev1.EventTypeWarning, novacronv1.ReasonUnschedulable, novacronv1.ActionSchedule, "%s", msg)
		}
		r.setPhase(ctx, vm, novacronv1.VMScheduling)
		return ctrl.Result{}, true, nil
	}
	if vm.Status.NodeName != "" && vm.Status.NodeName != node {
		// The VM's domain and disks are on another node; this pod reserves the
		// wrong one. Replace it with one pinned to the VM's node.
		r.Recorder.Eventf(vm, nil, corev1.EventTypeWarning, novacronv1.ReasonWrongNode, novacronv1.ActionSchedule, "launcher pod %s is on node %s but the VM lives on node %s; replacing the pod", pod.Name, node, vm.Status.NodeName)
		return ctrl.Result{}, true, client.IgnoreNotFound(r.Client.Delete(ctx, pod))
	}
	r.setCondition(vm, novacronv1.VMConditionScheduled, metav1.ConditionTrue, novacronv1.ReasonScheduled, fmt.Sprintf("launcher pod %s is bound to node %s", pod.Name, node))
	vm.Status.LauncherPod = pod.Name
	if vm.Status.NodeName == "" {
		// Record the node before touching its hypervisor, so that a restarted
		// operator knows where a domain may already exist.
		vm.Status.NodeName = node
		r.setPhase(ctx, vm, novacronv1.VMScheduled)
		if err := r.Client.Status().Update(ctx, vm); err != nil {
			return ctrl.Result{}, true, err
		}
		r.Recorder.Eventf(vm, nil, corev1.EventTypeNormal, novacronv1.ReasonScheduled, novacronv1.ActionSchedule, "placed on node %s", node)
	}
	s.pod, s.node = pod, node
	return ctrl.Result{}, false, nil
}

// createLauncherPod makes the pod that asks the scheduler for a node.
func (r *Reconciler) createLauncherPod(ctx context.Context, vm *novacronv1.VirtualMachine) error {
	pools, err := devices.VFPools(ctx, devices.ReadNetworks(r.APIReader), vm)
	if devices.IsVMError(err) {
		return domain.SpecErrorf(novacronv1.ReasonNetworkNotFound, "%v", err)
	}
	if err != nil {
		return err
	}
	if t := launcher.ClaimTemplate(vm, r.Launcher, pools); t != nil {
		if err := r.ensureClaimTemplate(ctx, vm, t); err != nil {
			return err
		}
	}
	pod := launcher.BuildPod(vm, r.Launcher, pools)
	err = r.Client.Create(ctx, pod)
	switch {
	case apierrors.IsAlreadyExists(err):
		// The cache has not seen our own pod yet; its event brings us back.
		return nil
	case apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause):
		// The namespace is being deleted, and with it the pod just gone and
		// the VM: nothing to place. The VM's deletion brings us back.
		return nil
	case isQuotaRefusal(err):
		r.setPhase(ctx, vm, novacronv1.VMPending)
		msg := fmt.Sprintf("the namespace's ResourceQuota has no room for the VM's launcher pod; free some or ask for a larger quota: %v", err)
		if r.setCondition(vm, novacronv1.VMConditionScheduled, metav1.ConditionFalse, novacronv1.ReasonQuotaExceeded, msg) {
			r.Recorder.Eventf(vm, nil, corev1.EventTypeWarning, novacronv1.ReasonQuotaExceeded, novacronv1.ActionSchedule, "%s", msg)
		}
		return errQuotaExceeded
	case err != nil:
		return fmt.Errorf("creating launcher pod for VM %s/%s: %w", vm.Namespace, vm.Name, err)
	}
	// Recorded at once: only this pod is the VM's. A patch, not an update:
	// a conflict with another write of the VM must not lose the record,
	// which would make the pod foreign.
	recorded := vm.DeepCopy()
	vm.Status.LauncherPodUID = pod.UID
	forgetDevices(vm)
	if err := r.Client.Status().Patch(ctx, vm, client.MergeFrom(recorded)); err != nil {
		return err
	}
	r.setPhase(ctx, vm, novacronv1.VMScheduling)
	r.setCondition(vm, novacronv1.VMConditionScheduled, metav1.ConditionFalse, novacronv1.ReasonPending, fmt.Sprintf("launcher pod %s created; waiting for scheduler %s", pod.Name, pod.Spec.SchedulerName))
	r.Recorder.Eventf(vm, nil, corev1.EventTypeNormal, novacronv1.ReasonLauncherPodCreated, novacronv1.ActionSchedule, "created launcher pod %s for scheduler %s", pod.Name, pod.Spec.SchedulerName)
	return nil
}

// errQuotaExceeded is a launcher pod the namespace's quota refused: the VM
// looks again after quotaRetry (nothing it watches says when room is made).
var errQuotaExceeded = errors.New("launcher pod refused by the namespace's ResourceQuota")

const quotaRetry = 30 * time.Second

// isQuotaRefusal says whether err is the ResourceQuota admission's refusal.
func isQuotaRefusal(err error) bool {
	return apierrors.IsForbidden(err) && strings.Contains(err.Error(), "exceeded quota")
}

// replaceForeignPod deletes a pod that claims to be the VM's launcher pod but
// is not the one NovaCron made; a new one follows once it is gone.
func (r *Reconciler) replaceForeignPod(ctx context.Context, vm *novacronv1.VirtualMachine, pod *corev1.Pod) error {
	r.setPhase(ctx, vm, novacronv1.VMPending)
	if !pod.DeletionTimestamp.IsZero() {
		return nil // its deletion brings us back
	}
	r.Recorder.Eventf(vm, nil, corev1.EventTypeWarning, novacronv1.ReasonLauncherPodReplaced, novacronv1.ActionSchedule,
		"pod %s claims to be the VM's launcher pod but is not the one NovaCron made; deleting it and making a new one", pod.Name)
	return client.IgnoreNotFound(r.Client.Delete(ctx, pod, client.Preconditions{UID: &pod.UID}))
}

// replaceStalePod deletes a launcher pod made from an older spec; the
// scheduler places one made from the current spec once it is gone.
func (r *Reconciler) replaceStalePod(ctx context.Context, vm *novacronv1.VirtualMachine, pod *corev1.Pod) error {
	r.setPhase(ctx, vm, novacronv1.VMPending)
	r.Recorder.Eventf(vm, nil, corev1.EventTypeNormal, novacronv1.ReasonLauncherPodReplaced, novacronv1.ActionSchedule,
		"launcher pod %s was made from an older spec; replacing it so that the scheduler places the current one", pod.Name)
	return client.IgnoreNotFound(r.Client.Delete(ctx, pod, client.Preconditions{UID: &pod.UID}))
}

// connect reaches the node's hypervisor and reads the VM's devices there.
func (r *Reconciler) connect(ctx context.Context, s *runScope) (ctrl.Result, bool, error) {
	var err error
	if s.hvObj, s.hv, err = r.hypervisor(ctx, s.node); err != nil {
		return ctrl.Result{}, true, err
	}
	r.markReachable(s.vm, s.node)
	var held *devicesHeld
	if s.devices, err = r.assignedDevices(ctx, s); errors.As(err, &held) {
		r.setCondition(s.vm, novacronv1.ConditionReady, metav1.ConditionFalse, novacronv1.ReasonDevicesHeld, held.msg)
		return ctrl.Result{RequeueAfter: time.Second}, true, nil
	} else if err != nil {
		return ctrl.Result{}, true, err
	}
	s.vm.Status.Devices = s.devices.GPUs
	s.vm.Status.Interfaces = domain.Interfaces(s.vm, s.devices)
	if err := r.showDeviceHealth(ctx, s.vm, s.node); err != nil {
		return ctrl.Result{}, true, err
	}
	return ctrl.Result{}, false, nil
}

// observe reports a domain that already runs (or is on its way down) and
// lets the next phases start one that does not.
func (r *Reconciler) observe(ctx context.Context, s *runScope) (ctrl.Result, bool, error) {
	vm := s.vm
	state, err := s.hv.State(ctx, domain.DomainName(vm))
	if err != nil && !errors.Is(err, provider.ErrNotFound) {
		return ctrl.Result{}, true, err
	}
	s.state = state
	if state == "" && vm.Status.DomainDefined {
		return r.domainMissing(ctx, s)
	}
	if state != "" && !vm.Status.DomainDefined {
		// Before adopting a domain found by name, make sure it is this VM's:
		// one left by an earlier VM of the same name (its namespace made
		// again while a node was away) must not pass for it.
		if err := r.checkOwnDomain(ctx, s); err != nil {
			return ctrl.Result{}, true, err
		}
	}
	// Found (a VM from before the field was recorded adopts it here too).
	vm.Status.DomainDefined = vm.Status.DomainDefined || state != ""
	switch state {
	case provider.StateRunning, provider.StatePaused:
		r.setPhase(ctx, vm, novacronv1.VMRunning)
		if state == provider.StatePaused {
			r.setCondition(vm, novacronv1.ConditionReady, metav1.ConditionFalse, novacronv1.ReasonPaused, "the domain is paused on the hypervisor")
		} else {
			r.setCondition(vm, novacronv1.ConditionReady, metav1.ConditionTrue, novacronv1.ReasonRunning, fmt.Sprintf("running on node %s", s.node))
		}
		r.recordStats(ctx, vm, s.hv, s.node)
		return ctrl.Result{RequeueAfter: r.StatsInterval}, true, nil
	case provider.StateShutdown:
		r.setPhase(ctx, vm, novacronv1.VMStopping)
		return ctrl.Result{RequeueAfter: time.Second}, true, nil
	case provider.StateCrashed:
		r.Recorder.Eventf(vm, nil, corev1.EventTypeWarning, novacronv1.ReasonCrashed, novacronv1.ActionStart, "the guest crashed on node %s; starting it again", s.node)
	}
	return ctrl.Result{}, false, nil
}

// checkOwnDomain refuses a domain of the VM's name whose UUID is not the VM's.
func (r *Reconciler) checkOwnDomain(ctx context.Context, s *runScope) error {
	uuid, ours, err := domain.Owner(ctx, s.hv, s.vm)
	if err != nil || ours {
		return err
	}
	return domain.SpecErrorf(novacronv1.ReasonDomainConflict, "node %s already has a domain named %s that is not this VM's (UUID %s, not %s); remove it from the hypervisor or rename the VM",
		s.node, domain.DomainName(s.vm), uuid, s.vm.UID)
}

// domainMissing reports a domain NovaCron defined that is gone from its node,
// and defines nothing: the guest may run on another node (a migration or a
// hand-made copy nobody told NovaCron of), and its disk here may be stale or
// gone, so only someone who knows it runs nowhere may have it defined again.
func (r *Reconciler) domainMissing(ctx context.Context, s *runScope) (ctrl.Result, bool, error) {
	vm := s.vm
	// The cache may be behind a migration that just moved the domain: only
	// the VM as stored now says it should be here.
	stored := &novacronv1.VirtualMachine{}
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(vm), stored); err != nil {
		return ctrl.Result{}, true, err
	}
	if stored.Status.NodeName != s.node || stored.Status.MigrationState != nil || !stored.Status.DomainDefined {
		return ctrl.Result{RequeueAfter: time.Second}, true, nil
	}
	msg := fmt.Sprintf("domain %s was defined on node %s but is gone from its hypervisor; NovaCron does not define it again by itself, as the guest may run elsewhere or its disk be stale. "+
		"If it certainly runs nowhere, a platform admin has it defined again from its disks on %s with: kubectl patch vm %s -n %s --subresource=status --type=merge -p '{\"status\":{\"domainDefined\":false}}'",
		domain.DomainName(vm), s.node, s.node, vm.Name, vm.Namespace)
	r.setPhase(ctx, vm, novacronv1.VMFailed)
	if r.setCondition(vm, novacronv1.ConditionReady, metav1.ConditionFalse, novacronv1.ReasonDomainMissing, msg) {
		r.Recorder.Eventf(vm, nil, corev1.EventTypeWarning, novacronv1.ReasonDomainMissing, novacronv1.ActionStart, "%s", msg)
	}
	// Nothing the operator watches changes the hypervisor's domains; look
	// again now and then in case the domain comes back.
	return ctrl.Result{RequeueAfter: r.StatsInterval}, true, nil
}

// define (re)defines the domain from the current spec, unless a preStart hook
// already failed for it.
func (r *Reconciler) define(ctx context.Context, s *runScope) (ctrl.Result, bool, error) {
	vm := s.vm
	if failed, err := r.hookFailed(ctx, vm, novacronv1.ReasonPreStartHookFailed); err != nil || failed {
		if err == nil {
			r.setPhase(ctx, vm, novacronv1.VMStopped)
		}
		return ctrl.Result{}, true, err
	}
	if !launcher.PodMatches(s.pod, vm) {
		// The spec changed after the pod was placed (admission refuses that
		// once the pod is bound, but not in the moment before the operator
		// records it): its reservation does not hold what would be defined.
		return ctrl.Result{}, true, r.replaceStalePod(ctx, vm, s.pod)
	}
	built, err := r.Domains.Build(ctx, vm, s.devices, s.hvObj, s.hv)
	if err != nil {
		return ctrl.Result{}, true, err
	}
	if built.CloudInitAttached {
		r.setCondition(vm, novacronv1.VMConditionCloudInit, metav1.ConditionTrue, novacronv1.ReasonAttached, "cloud-init NoCloud disk attached")
	} else {
		r.setCondition(vm, novacronv1.VMConditionCloudInit, metav1.ConditionFalse, novacronv1.ReasonUnsupported, built.CloudInitNote)
	}
	name := built.Domain.Name
	if err := s.hv.Define(ctx, built.Domain); err != nil {
		if errors.Is(err, provider.ErrConflict) {
			return ctrl.Result{}, true, domain.SpecErrorf(novacronv1.ReasonDomainConflict, "node %s already has a domain named %s that is not this VM's (another UUID); remove it from the hypervisor or rename the VM: %v", s.node, name, err)
		}
		return ctrl.Result{}, true, err
	}
	vm.Status.DomainDefined = true
	if s.state == "" {
		r.Recorder.Eventf(vm, nil, corev1.EventTypeNormal, novacronv1.ReasonDefined, novacronv1.ActionStart, "defined domain %s on node %s", name, s.node)
		log.FromContext(ctx).Info("domain defined", "domain", name, "node", s.node)
	}
	r.setPhase(ctx, vm, novacronv1.VMStarting)
	return ctrl.Result{}, false, nil
}

// preStart runs the VM's preStart hook; a failed one keeps the VM stopped
// unless its failure policy ignores it.
func (r *Reconciler) preStart(ctx context.Context, s *runScope) (ctrl.Result, bool, error) {
	vm := s.vm
	lc := vm.Spec.Template.Spec.Lifecycle
	if lc == nil || lc.PreStart == nil {
		return ctrl.Result{}, false, nil
	}
	outcome, herr := r.runHook(ctx, vm, hookPreStart, lc.PreStart)
	switch {
	case outcome == hookRunning:
		return ctrl.Result{}, true, herr
	case outcome == hookFailed && lc.PreStart.FailurePolicy == novacronv1.HookIgnore:
		r.Recorder.Eventf(vm, nil, corev1.EventTypeWarning, novacronv1.ReasonHookFailed, novacronv1.ActionStart, "preStart hook failed (ignored by its failure policy): %v", herr)
	case outcome == hookFailed:
		r.setCondition(vm, novacronv1.VMConditionHooksSucceeded, metav1.ConditionFalse, novacronv1.ReasonPreStartHookFailed, fmt.Sprintf("preStart hook failed, so the VM stays stopped (change the spec to try again): %v", herr))
		r.setCondition(vm, novacronv1.ConditionReady, metav1.ConditionFalse, novacronv1.ReasonPreStartHookFailed, "preStart hook failed")
		r.setPhase(ctx, vm, novacronv1.VMStopped)
		r.Recorder.Eventf(vm, nil, corev1.EventTypeWarning, novacronv1.ReasonHookFailed, novacronv1.ActionStart, "preStart hook failed; the VM stays stopped: %v", herr)
		return ctrl.Result{}, true, nil
	default:
		r.setCondition(vm, novacronv1.VMConditionHooksSucceeded, metav1.ConditionTrue, novacronv1.ReasonPreStartHookSucceeded, "preStart hook succeeded")
	}
	return ctrl.Result{}, false, nil
}

// boot starts the defined domain.
func (r *Reconciler) boot(ctx context.Context, s *runScope) (ctrl.Result, bool, error) {
	name := domain.DomainName(s.vm)
	if err := s.hv.Start(ctx, name); err != nil {
		return ctrl.Result{}, true, err
	}
	r.Recorder.Eventf(s.vm, nil, corev1.EventTypeNormal, novacronv1.ReasonStarted, novacronv1.ActionStart, "started domain %s on node %s", name, s.node)
	r.setPhase(ctx, s.vm, novacronv1.VMRunning)
	r.setCondition(s.vm, novacronv1.ConditionReady, metav1.ConditionTrue, novacronv1.ReasonRunning, fmt.Sprintf("running on node %s", s.node))
	return ctrl.Result{RequeueAfter: r.StatsInterval}, true, nil
}
