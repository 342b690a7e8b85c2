package webhook

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/migration"
	"github.com/novacron/operator/policies"
)

// +kubebuilder:webhook:path=/validate-novacron-io-v1alpha1-virtualmachinemigration,mutating=false,failurePolicy=fail,sideEffects=None,groups=novacron.io,resources=virtualmachinemigrations,verbs=create;update,versions=v1alpha1,name=vvirtualmachinemigration.novacron.io,admissionReviewVersions=v1,timeoutSeconds=5
// +kubebuilder:webhook:path=/validate-novacron-io-v1alpha1-virtualmachinesnapshot,mutating=false,failurePolicy=fail,sideEffects=None,groups=novacron.io,resources=virtualmachinesnapshots,verbs=create,versions=v1alpha1,name=vvirtualmachinesnapshot.novacron.io,admissionReviewVersions=v1,timeoutSeconds=5
// +kubebuilder:webhook:path=/validate-novacron-io-v1alpha1-virtualmachinerestore,mutating=false,failurePolicy=fail,sideEffects=None,groups=novacron.io,resources=virtualmachinerestores,verbs=create,versions=v1alpha1,name=vvirtualmachinerestore.novacron.io,admissionReviewVersions=v1,timeoutSeconds=5
// +kubebuilder:webhook:path=/validate-novacron-io-v1alpha1-virtualmachinepolicy,mutating=false,failurePolicy=fail,sideEffects=None,groups=novacron.io,resources=virtualmachinepolicies,verbs=create;update,versions=v1alpha1,name=vvirtualmachinepolicy.novacron.io,admissionReviewVersions=v1,timeoutSeconds=5

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

// MigrationValidator admits a live migration only of a VM that can move.
type MigrationValidator struct {
	Client   client.Reader
	Policies *policies.Engine
	Recorder events.EventRecorder
}

// ValidateCreate checks the VM is running, allows live migration, has no
// passthrough devices and no other migration under way, and that the migration
// policies allow it.
func (v *MigrationValidator) ValidateCreate(ctx context.Context, m *novacronv1.VirtualMachineMigration) (admission.Warnings, error) {
	vmPath := field.NewPath("spec", "vmName")
	vm, ferr := getVM(ctx, v.Client, m.Namespace, m.Spec.VMName, vmPath)
	if ferr != nil {
		return nil, invalid("VirtualMachineMigration", m.Name, field.ErrorList{ferr})
	}
	names, err := migration.SnapshotsOf(ctx, v.Client, vm)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	var errs field.ErrorList
	for _, why := range migration.Blockers(vm, names) {
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
	if v.Policies == nil {
		return nil, nil
	}
	denials, warnings, err := v.Policies.AllowMigration(ctx, policies.MigrationInput{VM: vm, Migration: m, SourceNode: vm.Status.NodeName, TargetNode: m.Spec.TargetNodeName, Reason: string(m.Spec.Reason)})
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	for _, d := range denials {
		errs = append(errs, field.Forbidden(vmPath, d))
	}
	return warnings, invalid("VirtualMachineMigration", m.Name, errs)
}

// ValidateUpdate allows only cancelling.
func (v *MigrationValidator) ValidateUpdate(_ context.Context, old, m *novacronv1.VirtualMachineMigration) (admission.Warnings, error) {
	if old.Spec.Cancel && !m.Spec.Cancel {
		return nil, invalid("VirtualMachineMigration", m.Name, field.ErrorList{field.Forbidden(field.NewPath("spec", "cancel"), "a cancelled migration cannot be resumed; create a new one")})
	}
	return nil, nil
}

// ValidateDelete allows every delete (it cancels the migration).
func (v *MigrationValidator) ValidateDelete(context.Context, *novacronv1.VirtualMachineMigration) (admission.Warnings, error) {
	return nil, nil
}

func orUnknown(p novacronv1.VMPhase) string {
	if p == "" {
		return "Pending"
	}
	return string(p)
}

// SnapshotValidator admits snapshots of existing VMs.
type SnapshotValidator struct{ Client client.Reader }

// ValidateCreate checks the VM exists.
func (v *SnapshotValidator) ValidateCreate(ctx context.Context, s *novacronv1.VirtualMachineSnapshot) (admission.Warnings, error) {
	if _, ferr := getVM(ctx, v.Client, s.Namespace, s.Spec.VMName, field.NewPath("spec", "vmName")); ferr != nil {
		return nil, invalid("VirtualMachineSnapshot", s.Name, field.ErrorList{ferr})
	}
	return nil, nil
}

// ValidateUpdate allows updates (the schema keeps vmName immutable).
func (v *SnapshotValidator) ValidateUpdate(context.Context, *novacronv1.VirtualMachineSnapshot, *novacronv1.VirtualMachineSnapshot) (admission.Warnings, error) {
	return nil, nil
}

// ValidateDelete allows every delete.
func (v *SnapshotValidator) ValidateDelete(context.Context, *novacronv1.VirtualMachineSnapshot) (admission.Warnings, error) {
	return nil, nil
}

// RestoreValidator admits restores of a VM to one of its own snapshots.
type RestoreValidator struct{ Client client.Reader }

// ValidateCreate checks the VM and snapshot exist and belong together.
func (v *RestoreValidator) ValidateCreate(ctx context.Context, r *novacronv1.VirtualMachineRestore) (admission.Warnings, error) {
	var errs field.ErrorList
	if _, ferr := getVM(ctx, v.Client, r.Namespace, r.Spec.VMName, field.NewPath("spec", "vmName")); ferr != nil {
		errs = append(errs, ferr)
	}
	snapPath := field.NewPath("spec", "snapshotName")
	snap := &novacronv1.VirtualMachineSnapshot{}
	if err := v.Client.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: r.Spec.SnapshotName}, snap); err != nil {
		if apierrors.IsNotFound(err) {
			errs = append(errs, field.NotFound(snapPath, fmt.Sprintf("VirtualMachineSnapshot %s/%s", r.Namespace, r.Spec.SnapshotName)))
		} else {
			errs = append(errs, field.InternalError(snapPath, err))
		}
	} else if snap.Spec.VMName != r.Spec.VMName {
		errs = append(errs, field.Invalid(snapPath, r.Spec.SnapshotName, fmt.Sprintf("is a snapshot of VirtualMachine %s, not %s", snap.Spec.VMName, r.Spec.VMName)))
	}
	return nil, invalid("VirtualMachineRestore", r.Name, errs)
}

// ValidateUpdate allows updates (the schema keeps the references immutable).
func (v *RestoreValidator) ValidateUpdate(context.Context, *novacronv1.VirtualMachineRestore, *novacronv1.VirtualMachineRestore) (admission.Warnings, error) {
	return nil, nil
}

// ValidateDelete allows every delete.
func (v *RestoreValidator) ValidateDelete(context.Context, *novacronv1.VirtualMachineRestore) (admission.Warnings, error) {
	return nil, nil
}

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
