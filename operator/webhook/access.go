package webhook

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"

	"golang.org/x/net/http/httpguts"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/hooks"
)

// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// Access asks the API server whether the user making a change may do what
// the operator will later do for the VM with its own, wider rights: read
// the Secret the VM names, create the Jobs its hooks run. Without it a VM
// would lend its author the operator's rights.
type Access struct {
	// Client creates SubjectAccessReviews; nil skips the checks (unit tests
	// of the other rules).
	Client client.Client
}

// may refuses, naming the field, what the request's user may not do.
func (a Access) may(ctx context.Context, path *field.Path, attrs authorizationv1.ResourceAttributes, why string) *field.Error {
	if a.Client == nil {
		return nil
	}
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		return field.InternalError(path, fmt.Errorf("no admission request to take the user from: %w", err))
	}
	u := req.UserInfo
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		ResourceAttributes: &attrs, User: u.Username, Groups: u.Groups, UID: u.UID, Extra: map[string]authorizationv1.ExtraValue{},
	}}
	for k, v := range u.Extra {
		sar.Spec.Extra[k] = authorizationv1.ExtraValue(v)
	}
	if err := a.Client.Create(ctx, sar); err != nil {
		return field.InternalError(path, fmt.Errorf("asking whether %s may %s %s: %w", u.Username, attrs.Verb, attrs.Resource, err))
	}
	if sar.Status.Allowed {
		return nil
	}
	what := attrs.Resource
	if attrs.Name != "" {
		what += " " + attrs.Name
	}
	return field.Forbidden(path, fmt.Sprintf("%s may not %s %s in namespace %s, and %s", u.Username, attrs.Verb, what, attrs.Namespace, why))
}

// validateAccess checks what the VM's author must be allowed themselves:
// on create, and on updates that change it (never on the operator's own
// writes, which leave the spec as it was).
func (v *VMValidator) validateAccess(ctx context.Context, vm, old *novacronv1.VirtualMachine) field.ErrorList {
	var errs field.ErrorList
	spec := &vm.Spec.Template.Spec
	p := field.NewPath("spec", "template", "spec")
	if ref := spec.UserDataSecretRef; ref != nil && (old == nil || !equality.Semantic.DeepEqual(ref, old.Spec.Template.Spec.UserDataSecretRef)) {
		attrs := authorizationv1.ResourceAttributes{Namespace: vm.Namespace, Verb: "get", Resource: "secrets", Name: ref.Name}
		if err := v.Access.may(ctx, p.Child("userDataSecretRef", "name"), attrs, "the VM would hand its contents to the guest"); err != nil {
			errs = append(errs, err)
		}
	}
	if lc := spec.Lifecycle; lc != nil {
		var was *novacronv1.Lifecycle
		if old != nil {
			was = old.Spec.Template.Spec.Lifecycle
		}
		for _, h := range []struct {
			kind     string
			hook, in *novacronv1.LifecycleHook
		}{{"preStart", lc.PreStart, hookOf(was, true)}, {"preStop", lc.PreStop, hookOf(was, false)}} {
			if h.hook == nil || equality.Semantic.DeepEqual(h.hook, h.in) {
				continue
			}
			errs = append(errs, v.validateHook(ctx, p.Child("lifecycle", h.kind), vm.Namespace, h.hook)...)
		}
	}
	return errs
}

func hookOf(lc *novacronv1.Lifecycle, preStart bool) *novacronv1.LifecycleHook {
	switch {
	case lc == nil:
		return nil
	case preStart:
		return lc.PreStart
	}
	return lc.PreStop
}

// credentialHeaders carry secrets; in headers they would be in clear in the
// VM for anyone who may read it.
var credentialHeaders = []string{"Authorization", "Proxy-Authorization", "Cookie"}

// validateHookHeaders checks header names and values, keeps credentials out
// of the VM's clear headers, and lets its author name only Secrets they may
// read themselves (the operator reads them with its own rights).
func (v *VMValidator) validateHookHeaders(ctx context.Context, path *field.Path, ns string, h *novacronv1.HTTPHook) field.ErrorList {
	var errs field.ErrorList
	seen := map[string]bool{}
	for _, k := range slices.Sorted(maps.Keys(h.Headers)) {
		p := path.Child("headers").Key(k)
		switch {
		case !httpguts.ValidHeaderFieldName(k):
			errs = append(errs, field.Invalid(p, k, "not a valid HTTP header name"))
		case !httpguts.ValidHeaderFieldValue(h.Headers[k]):
			errs = append(errs, field.Invalid(p, "(value)", "not a valid HTTP header value (no line breaks or control characters)"))
		case slices.ContainsFunc(credentialHeaders, func(c string) bool { return strings.EqualFold(c, k) }):
			errs = append(errs, field.Forbidden(p, "a credential is in clear here for anyone who may read the VM; put it in a Secret and name it in headersFrom"))
		}
		seen[http.CanonicalHeaderKey(k)] = true
	}
	for i, from := range h.HeadersFrom {
		p := path.Child("headersFrom").Index(i)
		if !httpguts.ValidHeaderFieldName(from.Name) {
			errs = append(errs, field.Invalid(p.Child("name"), from.Name, "not a valid HTTP header name"))
			continue
		}
		if seen[http.CanonicalHeaderKey(from.Name)] {
			errs = append(errs, field.Duplicate(p.Child("name"), from.Name))
			continue
		}
		seen[http.CanonicalHeaderKey(from.Name)] = true
		attrs := authorizationv1.ResourceAttributes{Namespace: ns, Verb: "get", Resource: "secrets", Name: from.SecretName}
		if err := v.Access.may(ctx, p.Child("secretName"), attrs, "the hook would send its contents"); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// validateHook refuses a Job hook its author could not create themselves, or
// whose pod would take anything of the node; and an HTTP hook aimed at an
// address hooks may not reach (the operator's dialer checks again on every
// call, after name resolution; this only says so early).
func (v *VMValidator) validateHook(ctx context.Context, path *field.Path, ns string, h *novacronv1.LifecycleHook) field.ErrorList {
	if h.HTTP != nil {
		if errs := v.validateHookHeaders(ctx, path.Child("http"), ns, h.HTTP); len(errs) > 0 {
			return errs
		}
		u, err := url.Parse(h.HTTP.URL)
		if err != nil {
			return field.ErrorList{field.Invalid(path.Child("http", "url"), h.HTTP.URL, err.Error())}
		}
		if a, err := netip.ParseAddr(u.Hostname()); err == nil {
			if err := v.HookEgress.Check(a); err != nil {
				return field.ErrorList{field.Forbidden(path.Child("http", "url"), err.Error())}
			}
		}
		return nil
	}
	if h.Job == nil {
		return nil
	}
	jp := path.Child("job", "template")
	errs := validateTemplateMeta(jp.Child("metadata"), h.Job.Template.Metadata)
	errs = append(errs, hooks.CheckJobSpec(jp.Child("spec"), &h.Job.Template.Spec)...)
	attrs := authorizationv1.ResourceAttributes{Namespace: ns, Verb: "create", Group: "batch", Resource: "jobs"}
	if err := v.Access.may(ctx, jp, attrs, "the operator would create this hook's Job on their behalf"); err != nil {
		errs = append(errs, err)
	}
	return errs
}
