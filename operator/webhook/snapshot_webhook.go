package webhook

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

// +kubebuilder:webhook:path=/validate-novacron-io-v1alpha1-virtualmachinesnapshot,mutating=false,failurePolicy=fail,sideEffects=None,groups=novacron.io,resources=virtualmachinesnapshots,verbs=create,versions=v1alpha1,name=vvirtualmachinesnapshot.novacron.io,admissionReviewVersions=v1,timeoutSeconds=5
// +kubebuilder:webhook:path=/validate-novacron-io-v1alpha1-virtualmachinerestore,mutating=false,failurePolicy=fail,sideEffects=None,groups=novacron.io,resources=virtualmachinerestores,verbs=create,versions=v1alpha1,name=vvirtualmachinerestore.novacron.io,admissionReviewVersions=v1,timeoutSeconds=5

// SnapshotValidator admits snapshots of existing VMs.
type SnapshotValidator struct {
	Client   client.Reader
	Policies PolicyGate
}

// ValidateCreate checks the VM exists, then asks the admission policies.
func (v *SnapshotValidator) ValidateCreate(ctx context.Context, s *novacronv1.VirtualMachineSnapshot) (admission.Warnings, error) {
	if _, ferr := getVM(ctx, v.Client, s.Namespace, s.Spec.VMName, field.NewPath("spec", "vmName")); ferr != nil {
		return nil, invalid("VirtualMachineSnapshot", s.Name, field.ErrorList{ferr})
	}
	return v.Policies.admit(ctx, "CREATE", "VirtualMachineSnapshot", s, nil)
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
type RestoreValidator struct {
	Client   client.Reader
	Policies PolicyGate
}

// ValidateCreate checks the VM and snapshot exist and belong together, then
// asks the admission policies.
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
	if len(errs) > 0 {
		return nil, invalid("VirtualMachineRestore", r.Name, errs)
	}
	return v.Policies.admit(ctx, "CREATE", "VirtualMachineRestore", r, nil)
}

// ValidateUpdate allows updates (the schema keeps the references immutable).
func (v *RestoreValidator) ValidateUpdate(context.Context, *novacronv1.VirtualMachineRestore, *novacronv1.VirtualMachineRestore) (admission.Warnings, error) {
	return nil, nil
}

// ValidateDelete allows every delete.
func (v *RestoreValidator) ValidateDelete(context.Context, *novacronv1.VirtualMachineRestore) (admission.Warnings, error) {
	return nil, nil
}
