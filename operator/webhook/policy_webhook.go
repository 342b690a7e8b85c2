package webhook

import (
	"context"
	"errors"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/policies"
)

// +kubebuilder:webhook:path=/validate-novacron-io-v1alpha1-virtualmachinepolicy,mutating=false,failurePolicy=fail,sideEffects=None,groups=novacron.io,resources=virtualmachinepolicies,verbs=create;update,versions=v1alpha1,name=vvirtualmachinepolicy.novacron.io,admissionReviewVersions=v1,timeoutSeconds=5

// PolicyValidator rejects a VirtualMachinePolicy whose Rego does not compile,
// with the compiler's message.
type PolicyValidator struct{ Policies *policies.Engine }

// ValidateCreate compiles the policy.
func (v *PolicyValidator) ValidateCreate(ctx context.Context, p *novacronv1.VirtualMachinePolicy) (admission.Warnings, error) {
	return v.compile(ctx, p)
}

// ValidateUpdate compiles the policy.
func (v *PolicyValidator) ValidateUpdate(ctx context.Context, _, p *novacronv1.VirtualMachinePolicy) (admission.Warnings, error) {
	return v.compile(ctx, p)
}

// ValidateDelete allows every delete.
func (v *PolicyValidator) ValidateDelete(context.Context, *novacronv1.VirtualMachinePolicy) (admission.Warnings, error) {
	return nil, nil
}

func (v *PolicyValidator) compile(ctx context.Context, p *novacronv1.VirtualMachinePolicy) (admission.Warnings, error) {
	if _, err := v.Policies.Compile(ctx, p); err != nil {
		var ce *policies.CompileError
		if errors.As(err, &ce) {
			var errs field.ErrorList
			for _, e := range ce.Errors {
				errs = append(errs, field.Invalid(field.NewPath("spec", "rego"), "(rego source)", e))
			}
			return nil, invalid("VirtualMachinePolicy", p.Name, errs)
		}
		return nil, apierrors.NewInternalError(err)
	}
	return nil, nil
}
