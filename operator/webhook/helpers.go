package webhook

import (
	"context"
	"fmt"
	"reflect"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/policies"
)

// isNilObject tells a typed nil (no old object on CREATE) from an object.
func isNilObject(o any) bool {
	if o == nil {
		return true
	}
	v := reflect.ValueOf(o)
	return v.Kind() == reflect.Pointer && v.IsNil()
}

// fieldPath turns a policy's dotted field ("spec.template.spec.resources.cpu")
// into a field.Path.
func fieldPath(dotted string) *field.Path {
	parts := strings.Split(dotted, ".")
	p := field.NewPath(parts[0])
	for _, s := range parts[1:] {
		p = p.Child(s)
	}
	return p
}

// getVM reads the VM an object refers to, as a field error when it is missing.
func getVM(ctx context.Context, c client.Reader, ns, name string, path *field.Path) (*novacronv1.VirtualMachine, *field.Error) {
	vm := &novacronv1.VirtualMachine{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, vm); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, field.NotFound(path, fmt.Sprintf("VirtualMachine %s/%s", ns, name))
		}
		return nil, field.InternalError(path, err)
	}
	return vm, nil
}

func invalid(kind, name string, errs field.ErrorList) error {
	if len(errs) == 0 {
		return nil
	}
	return apierrors.NewInvalid(novacronv1.GroupVersion.WithKind(kind).GroupKind(), name, errs)
}

func orUnknown(p novacronv1.VMPhase) string {
	if p == "" {
		return "Pending"
	}
	return string(p)
}

// PolicyGate runs the platform team's admission policies on a request.
type PolicyGate struct {
	Reader   client.Reader
	Engine   *policies.Engine
	Recorder events.EventRecorder
	// Operator is the operator's own user name. Its requests (finalizers,
	// a drain's migrations) pass without admission policies: a broken or
	// too broad policy must not stop the operator from finishing what users
	// asked for. Policies are for users' requests, and so is what the
	// operator makes on a user's standing request: a VM's scheduled
	// snapshots are judged.
	Operator string
}

// admit runs the admission policies: deny-enforced violations reject the
// request with their fields; warnings go back to the user; dryrun violations
// become events.
func (g PolicyGate) admit(ctx context.Context, op, kind string, obj, old client.Object) (admission.Warnings, error) {
	if g.Engine == nil {
		return nil, nil
	}
	c, engine, rec := g.Reader, g.Engine, g.Recorder
	in := policies.AdmissionInput{Operation: op, Kind: kind, Object: obj}
	if old != nil && !isNilObject(old) {
		in.OldObject = old
	}
	if req, err := admission.RequestFromContext(ctx); err == nil {
		// A VM's scheduled snapshots are the operator's writes but the
		// tenant's asking (spec.snapshotPolicy): they are judged.
		if g.Operator != "" && req.UserInfo.Username == g.Operator && obj.GetLabels()[novacronv1.LabelSnapshotScheduled] != "true" {
			return nil, nil
		}
		in.UserInfo = policies.UserInfo{Username: req.UserInfo.Username, Groups: req.UserInfo.Groups}
	}
	if ns := obj.GetNamespace(); ns != "" {
		in.Namespace.Name = ns
		var nsObj corev1.Namespace
		if err := c.Get(ctx, client.ObjectKey{Name: ns}, &nsObj); err == nil {
			in.Namespace.Labels = nsObj.Labels
		}
	}
	res, err := engine.Admit(ctx, in)
	if err != nil {
		// Fail closed: a policy that errors does not let requests through.
		return nil, apierrors.NewInternalError(fmt.Errorf("evaluating admission policies: %w", err))
	}
	for _, d := range res.DryRun {
		if rec != nil {
			rec.Eventf(obj, nil, corev1.EventTypeWarning, novacronv1.ReasonPolicyDryRun, novacronv1.ActionAdmit, "policy %s (dryrun) would deny: %s", d.Policy, d.Message)
		}
	}
	if len(res.Denials) == 0 {
		return res.Warnings, nil
	}
	var errs field.ErrorList
	for _, d := range res.Denials {
		path := field.NewPath("spec")
		if d.Field != "" {
			path = fieldPath(d.Field)
		}
		errs = append(errs, field.Forbidden(path, fmt.Sprintf("policy %s: %s", d.Policy, d.Message)))
	}
	gk := novacronv1.GroupVersion.WithKind(kind).GroupKind()
	return res.Warnings, apierrors.NewInvalid(gk, obj.GetName(), errs)
}
