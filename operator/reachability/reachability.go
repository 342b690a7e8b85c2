// Package reachability keeps each Hypervisor's Reachable condition true to
// what its node's hypervisor answers: the operator connects to it and asks
// for its host information, on every change of the Hypervisor and every
// Interval. `kubectl get hv` shows the condition, the scheduler places
// nothing on a node whose hypervisor does not answer, and events on the
// Hypervisor say when that changes. (novacron-node's heartbeat joins this
// when the node agent arrives.)
package reachability

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/conflict"
	"github.com/novacron/operator/operator/metrics"
	"github.com/novacron/operator/operator/provider"
)

// Reconciler probes Hypervisors.
type Reconciler struct {
	Client      client.Client
	Recorder    events.EventRecorder
	Hypervisors provider.Connector
	// Interval is how often a hypervisor is asked again; Timeout bounds one
	// probe.
	Interval, Timeout time.Duration
}

// +kubebuilder:rbac:groups=novacron.io,resources=hypervisors,verbs=get;list;watch
// +kubebuilder:rbac:groups=novacron.io,resources=hypervisors/status,verbs=get;update;patch

// SetupWithManager registers the controller.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Interval == 0 {
		r.Interval = 30 * time.Second
	}
	if r.Timeout == 0 {
		r.Timeout = 5 * time.Second
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("reachability").
		For(&novacronv1.Hypervisor{}).
		Complete(conflict.Retry(metrics.Instrument("reachability", r)))
}

// Reconcile asks one node's hypervisor for its host information and records
// whether it answered.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	hv := &novacronv1.Hypervisor{}
	if err := r.Client.Get(ctx, req.NamespacedName, hv); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	orig := hv.DeepCopy()
	cond := r.probe(ctx, hv)
	var before *metav1.Condition
	if c := meta.FindStatusCondition(hv.Status.Conditions, novacronv1.HypervisorConditionReachable); c != nil {
		before = c.DeepCopy() // SetStatusCondition changes it in place
	}
	if meta.SetStatusCondition(&hv.Status.Conditions, cond) {
		if err := r.Client.Status().Patch(ctx, hv, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
			return ctrl.Result{}, err
		}
	}
	if before == nil || before.Status != cond.Status {
		r.report(ctx, hv, before, cond)
	}
	return ctrl.Result{RequeueAfter: r.next(meta.FindStatusCondition(hv.Status.Conditions, novacronv1.HypervisorConditionReachable))}, nil
}

// next is when to ask again: every Interval while the hypervisor answers;
// while it does not, after half the time it has been down (at least a
// second, at most Interval), so a node back after a short outage takes VMs
// again at once and one long gone costs a probe per Interval.
func (r *Reconciler) next(c *metav1.Condition) time.Duration {
	if c.Status == metav1.ConditionTrue {
		return r.Interval
	}
	return min(max(time.Since(c.LastTransitionTime.Time)/2, time.Second), r.Interval)
}

// probe is the Reachable condition the node's hypervisor earns now.
func (r *Reconciler) probe(ctx context.Context, hv *novacronv1.Hypervisor) metav1.Condition {
	ctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	cond := metav1.Condition{Type: novacronv1.HypervisorConditionReachable, ObservedGeneration: hv.Generation}
	h, err := r.Hypervisors.Hypervisor(ctx, hv.Spec.URI)
	var info provider.HostInfo
	if err == nil {
		info, err = h.Info(ctx)
	}
	if errors.Is(err, provider.ErrRefused) {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, novacronv1.ReasonURIRefused, err.Error()
		return cond
	}
	if err != nil {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, novacronv1.ReasonUnreachable, fmt.Sprintf("%s does not answer: %v", hv.Spec.URI, err)
		return cond
	}
	cond.Status, cond.Reason = metav1.ConditionTrue, novacronv1.ReasonConnected
	cond.Message = fmt.Sprintf("%s answers (%d CPUs, %s)", hv.Spec.URI, info.CPUs, info.Version)
	return cond
}

// report says in an event and the log that the hypervisor stopped or
// started answering (the first probe of a reachable one says nothing).
func (r *Reconciler) report(ctx context.Context, hv *novacronv1.Hypervisor, before *metav1.Condition, now metav1.Condition) {
	log.FromContext(ctx).Info("hypervisor reachability", "node", hv.Name, "reachable", now.Status, "message", now.Message)
	switch {
	case now.Status == metav1.ConditionFalse:
		r.Recorder.Eventf(hv, nil, corev1.EventTypeWarning, novacronv1.ReasonHypervisorUnreachable, novacronv1.ActionConnect, "%s", now.Message)
	case before != nil:
		r.Recorder.Eventf(hv, nil, corev1.EventTypeNormal, novacronv1.ReasonHypervisorReachable, novacronv1.ActionConnect, "%s", now.Message)
	}
}
