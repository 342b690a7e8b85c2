package webhook

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/migration"
	"github.com/novacron/operator/policies"
)

// +kubebuilder:webhook:path=/validate-novacron-io-v1alpha1-virtualmachinemigration,mutating=false,failurePolicy=fail,sideEffects=None,groups=novacron.io,resources=virtualmachinemigrations,verbs=create;update,versions=v1alpha1,name=vvirtualmachinemigration.novacron.io,admissionReviewVersions=v1,timeoutSeconds=5

// MigrationValidator admits a live migration only of a VM that can move.
type MigrationValidator struct {
	Client client.Reader
	// Policies are the admission and migration policies; its Operator is
	// the one user that may set a system reason.
	Policies PolicyGate
}

// validateReason keeps the system reasons to the operator: the rebalancer
// stands back while a Rebalance migration is unfinished, and migration
// policies judge by reason, so a tenant's migration that claims one would
// stop the rebalancer or pass for a drain.
func (v *MigrationValidator) validateReason(ctx context.Context, m *novacronv1.VirtualMachineMigration) field.ErrorList {
	if m.Spec.Reason == "" || m.Spec.Reason == novacronv1.MigrationManual {
		return nil
	}
	if req, err := admission.RequestFromContext(ctx); err == nil && req.UserInfo.Username == v.Policies.Operator && v.Policies.Operator != "" {
		return nil
	}
	return field.ErrorList{field.Forbidden(field.NewPath("spec", "reason"), fmt.Sprintf("%s is set by NovaCron's own drain and rebalancer only; leave it empty or Manual", m.Spec.Reason))}
}

// ValidateCreate checks the VM is running, allows live migration, has no
// passthrough devices and no other migration under way, and that the migration
// policies allow it.
func (v *MigrationValidator) ValidateCreate(ctx context.Context, m *novacronv1.VirtualMachineMigration) (admission.Warnings, error) {
	if errs := v.validateReason(ctx, m); len(errs) > 0 {
		return nil, invalid("VirtualMachineMigration", m.Name, errs)
	}
	vmPath := field.NewPath("spec", "vmName")
	vm, ferr := getVM(ctx, v.Client, m.Namespace, m.Spec.VMName, vmPath)
	if ferr != nil {
		return nil, invalid("VirtualMachineMigration", m.Name, field.ErrorList{ferr})
	}
	var snaps novacronv1.VirtualMachineSnapshotList
	if err := v.Client.List(ctx, &snaps, client.InNamespace(vm.Namespace)); err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	var errs field.ErrorList
	for _, why := range migration.Blockers(vm, migration.SnapshotsByVM(snaps.Items)[vm.Namespace+"/"+vm.Name]) {
		errs = append(errs, field.Forbidden(vmPath, why))
	}
	var others novacronv1.VirtualMachineMigrationList
	if err := v.Client.List(ctx, &others, client.InNamespace(m.Namespace)); err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	for _, o := range others.Items {
		if o.Spec.VMName == vm.Name && o.Name != m.Name && !o.Status.Phase.Done() {
			errs = append(errs, field.Forbidden(vmPath, fmt.Sprintf("migration %s of this VM is still %s; wait for it or cancel it", o.Name, orUnknown(novacronv1.VMPhase(o.Status.Phase)))))
		}
	}
	if len(errs) > 0 {
		return nil, invalid("VirtualMachineMigration", m.Name, errs)
	}
	warnings, err := v.Policies.admit(ctx, "CREATE", "VirtualMachineMigration", m, nil)
	if err != nil || v.Policies.Engine == nil {
		return warnings, err
	}
	denials, more, err := v.Policies.Engine.AllowMigration(ctx, policies.MigrationInput{VM: vm, Migration: m, SourceNode: vm.Status.NodeName, TargetNode: m.Spec.TargetNodeName, Reason: string(m.Spec.Reason)})
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	for _, d := range denials {
		errs = append(errs, field.Forbidden(vmPath, d))
	}
	return append(warnings, more...), invalid("VirtualMachineMigration", m.Name, errs)
}

// ValidateUpdate allows only cancelling.
func (v *MigrationValidator) ValidateUpdate(ctx context.Context, old, m *novacronv1.VirtualMachineMigration) (admission.Warnings, error) {
	if m.Spec.Reason != old.Spec.Reason {
		if errs := v.validateReason(ctx, m); len(errs) > 0 {
			return nil, invalid("VirtualMachineMigration", m.Name, errs)
		}
	}
	if old.Spec.Cancel && !m.Spec.Cancel {
		return nil, invalid("VirtualMachineMigration", m.Name, field.ErrorList{field.Forbidden(field.NewPath("spec", "cancel"), "a cancelled migration cannot be resumed; create a new one")})
	}
	if equality.Semantic.DeepEqual(old.Spec, m.Spec) {
		return nil, nil // the operator's finalizer, a label: nothing policies judge
	}
	return v.Policies.admit(ctx, "UPDATE", "VirtualMachineMigration", m, old)
}

// ValidateDelete allows every delete (it cancels the migration).
func (v *MigrationValidator) ValidateDelete(context.Context, *novacronv1.VirtualMachineMigration) (admission.Warnings, error) {
	return nil, nil
}
