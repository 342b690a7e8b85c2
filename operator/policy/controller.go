// Package policy keeps the policy engine in step with the VirtualMachinePolicy
// objects: every change is compiled and, when it compiles, takes effect at once
// (no restart); when it does not, the last good version stays in force and the
// policy's Compiled condition carries the compiler's errors.
package policy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/log"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/conflict"
	"github.com/novacron/operator/operator/metrics"
	"github.com/novacron/operator/policies"
)

// Reconciler loads VirtualMachinePolicies into the engine.
type Reconciler struct {
	Client   client.Client
	Engine   *policies.Engine
	Recorder events.EventRecorder

	mu     sync.Mutex
	loaded map[string]int64 // generation each policy was last loaded at
	synced bool
}

// Synced is a readiness check: ready once every VirtualMachinePolicy that
// existed has been loaded at its generation. Before that, after a start,
// the webhooks would admit requests with no policies in force. Once ready it
// stays ready: a policy edited later takes effect within moments, and the
// operator must not drop out of its Service for that.
func (r *Reconciler) Synced(req *http.Request) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.synced {
		return nil
	}
	var list novacronv1.VirtualMachinePolicyList
	if err := r.Client.List(req.Context(), &list); err != nil {
		return err
	}
	for _, p := range list.Items {
		if r.loaded[p.Name] < p.Generation {
			return fmt.Errorf("policy %s is not loaded yet", p.Name)
		}
	}
	r.synced = true
	return nil
}

func (r *Reconciler) markLoaded(p *novacronv1.VirtualMachinePolicy) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.loaded == nil {
		r.loaded = map[string]int64{}
	}
	r.loaded[p.Name] = p.Generation
}

// +kubebuilder:rbac:groups=novacron.io,resources=virtualmachinepolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=novacron.io,resources=virtualmachinepolicies/status,verbs=get;update;patch

// SetupWithManager registers the controller. It runs on every replica, leader
// or not, because every replica answers admission requests with its engine.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("virtualmachinepolicy").
		For(&novacronv1.VirtualMachinePolicy{}).
		WithOptions(controller.Options{NeedLeaderElection: ptr.To(false)}).
		Complete(conflict.Retry(metrics.Instrument("virtualmachinepolicy", r)))
}

// Reconcile compiles one policy into the engine.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	p := &novacronv1.VirtualMachinePolicy{}
	if err := r.Client.Get(ctx, req.NamespacedName, p); err != nil {
		if apierrors.IsNotFound(err) {
			r.Engine.Remove(req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !p.DeletionTimestamp.IsZero() {
		r.Engine.Remove(p.Name)
		return ctrl.Result{}, nil
	}
	cond := metav1.Condition{Type: novacronv1.PolicyConditionCompiled, ObservedGeneration: p.Generation}
	err := r.Engine.Upsert(ctx, p)
	var ce *policies.CompileError
	switch {
	case errors.As(err, &ce):
		cond.Status, cond.Reason = metav1.ConditionFalse, novacronv1.ReasonCompileError
		cond.Message = ce.Error()
		if gen, ok := r.Engine.Policies()[p.Name]; ok {
			cond.Message += fmt.Sprintf("; generation %d stays in force", gen)
		} else if p.Spec.Enforcement == "" || p.Spec.Enforcement == novacronv1.EnforcementDeny {
			cond.Message += "; it never compiled, so it refuses every request it covers until it is fixed or deleted"
		}
	case err != nil:
		return ctrl.Result{}, err
	default:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionTrue, novacronv1.ReasonCompiled, fmt.Sprintf("in force for %v", p.Spec.DecisionPoints)
	}
	r.markLoaded(p)
	before := meta.FindStatusCondition(p.Status.Conditions, novacronv1.PolicyConditionCompiled)
	changed := meta.SetStatusCondition(&p.Status.Conditions, cond)
	if changed || p.Status.ObservedGeneration != p.Generation {
		p.Status.ObservedGeneration = p.Generation
		if err := r.Client.Status().Update(ctx, p); err != nil {
			return ctrl.Result{}, err
		}
		if before == nil || before.Status != cond.Status || before.Message != cond.Message {
			typ := corev1.EventTypeNormal
			if cond.Status == metav1.ConditionFalse {
				typ = corev1.EventTypeWarning
			}
			r.Recorder.Eventf(p, nil, typ, cond.Reason, novacronv1.ActionCompile, "%s", cond.Message)
			log.FromContext(ctx).Info("policy compiled", "policy", p.Name, "generation", p.Generation, "ok", cond.Status == metav1.ConditionTrue)
		}
	}
	return ctrl.Result{}, nil
}
