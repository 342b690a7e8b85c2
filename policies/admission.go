package policies

import (
	"context"
	"fmt"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"k8s.io/apimachinery/pkg/labels"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

// AdmissionInput is `input` for admission policies (see README.md).
type AdmissionInput struct {
	// Operation is CREATE, UPDATE or DELETE.
	Operation string `json:"operation"`
	// Kind of the object, such as VirtualMachine.
	Kind string `json:"kind"`
	// Object is the object as it would be stored (after defaulting).
	Object any `json:"object"`
	// OldObject is the stored object, on UPDATE and DELETE.
	OldObject any `json:"oldObject,omitempty"`
	// UserInfo is who asks.
	UserInfo UserInfo `json:"userInfo"`
	// Namespace is the object's namespace and its labels.
	Namespace Namespace `json:"namespace"`
}

// UserInfo is the requesting user.
type UserInfo struct {
	Username string   `json:"username"`
	Groups   []string `json:"groups,omitempty"`
}

// Namespace is a namespace's name and labels.
type Namespace struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
}

// Violation is one reason a policy denies a request.
type Violation struct {
	Policy      string
	Enforcement novacronv1.Enforcement
	Message     string
	// Field is the path of the field at fault, such as
	// spec.template.spec.resources.cpu, when the policy names one.
	Field string
}

// AdmissionResult is what the policies say of one request.
type AdmissionResult struct {
	// Denials come from deny-enforced policies: the request is rejected.
	Denials []Violation
	// Warnings are shown to the user (kubectl prints them).
	Warnings []string
	// DryRun are the violations of dryrun policies: recorded, not enforced.
	DryRun []Violation
}

// Admit evaluates every admission policy that applies to the namespace.
func (e *Engine) Admit(ctx context.Context, in AdmissionInput) (AdmissionResult, error) {
	var res AdmissionResult
	policies := e.snapshot(novacronv1.DecisionAdmission)
	if len(policies) == 0 {
		return res, nil
	}
	value, err := toValue(in)
	if err != nil {
		return res, err
	}
	nsLabels := labels.Set(in.Namespace.Labels)
	for _, p := range policies {
		if p.namespaces != nil && !p.namespaces.Matches(nsLabels) {
			continue
		}
		start := time.Now()
		out, err := p.eval(ctx, novacronv1.DecisionAdmission, value)
		if err != nil {
			observe(p.Name, novacronv1.DecisionAdmission, "error", start)
			return res, fmt.Errorf("policy %s: %w", p.Name, err)
		}
		denies := violations(p, out["deny"])
		warns := stringSet(out["warn"])
		result := "allow"
		switch {
		case len(denies) > 0 && p.Enforcement == novacronv1.EnforcementDeny:
			res.Denials = append(res.Denials, denies...)
			result = "deny"
		case len(denies) > 0 && p.Enforcement == novacronv1.EnforcementWarn:
			for _, v := range denies {
				res.Warnings = append(res.Warnings, fmt.Sprintf("policy %s: %s", p.Name, v.Message))
			}
			result = "warn"
		case len(denies) > 0:
			res.DryRun = append(res.DryRun, denies...)
			result = "dryrun"
		}
		if p.Enforcement != novacronv1.EnforcementDryRun {
			for _, w := range warns {
				res.Warnings = append(res.Warnings, fmt.Sprintf("policy %s: %s", p.Name, w))
			}
			if len(warns) > 0 && result == "allow" {
				result = "warn"
			}
		}
		observe(p.Name, novacronv1.DecisionAdmission, result, start)
	}
	return res, nil
}

// toValue converts Go input to a Rego value through its JSON form.
func toValue(in any) (ast.Value, error) {
	raw, err := jsonRoundTrip(in)
	if err != nil {
		return nil, err
	}
	return ast.InterfaceToValue(raw)
}

// violations reads a deny rule's set: strings, or objects with msg and field.
func violations(p *Policy, v any) []Violation {
	items, _ := v.([]any)
	out := make([]Violation, 0, len(items))
	for _, it := range items {
		viol := Violation{Policy: p.Name, Enforcement: p.Enforcement}
		switch x := it.(type) {
		case string:
			viol.Message = x
		case map[string]any:
			viol.Message, _ = x["msg"].(string)
			viol.Field, _ = x["field"].(string)
			if viol.Message == "" {
				viol.Message = fmt.Sprint(x)
			}
		default:
			viol.Message = fmt.Sprint(x)
		}
		out = append(out, viol)
	}
	return out
}

func stringSet(v any) []string {
	items, _ := v.([]any)
	out := make([]string, 0, len(items))
	for _, it := range items {
		if s, ok := it.(string); ok {
			out = append(out, s)
		} else {
			out = append(out, fmt.Sprint(it))
		}
	}
	return out
}
