// Package webhook holds NovaCron's admission webhooks: defaults for
// VirtualMachines, and validation of every NovaCron kind: cross-field checks
// the schema cannot express, then the platform team's admission policies.
package webhook

import (
	ctrl "sigs.k8s.io/controller-runtime"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/operator/hooks"
	"github.com/novacron/operator/policies"
)

// Config is what the platform team decides about admission.
type Config struct {
	// Schedulers are the schedulers a VM may name (empty: novacron-scheduler).
	Schedulers []string
	// HookEgress is where tenants' HTTP hooks may not go.
	HookEgress hooks.Egress
	// Operator is the operator's own user name, the only one that may ask
	// for a Drain or Rebalance migration (its drain and rebalancer do).
	Operator string
}

// Setup registers every webhook with the manager's webhook server.
func Setup(mgr ctrl.Manager, engine *policies.Engine, cfg Config) error {
	c := mgr.GetAPIReader()
	cached := mgr.GetClient()
	rec := mgr.GetEventRecorder("novacron-admission")
	gate := PolicyGate{Reader: cached, Engine: engine, Recorder: rec, Operator: cfg.Operator}
	if err := ctrl.NewWebhookManagedBy(mgr, &novacronv1.VirtualMachine{}).
		WithDefaulter(VMDefaulter{}).
		WithValidator(&VMValidator{Client: cached, APIReader: c, Policies: gate, Schedulers: cfg.Schedulers,
			Access: Access{Client: cached}, HookEgress: cfg.HookEgress}).
		Complete(); err != nil {
		return err
	}
	if err := ctrl.NewWebhookManagedBy(mgr, &novacronv1.VirtualMachineMigration{}).
		WithValidator(&MigrationValidator{Client: c, Policies: gate}).Complete(); err != nil {
		return err
	}
	if err := ctrl.NewWebhookManagedBy(mgr, &novacronv1.VirtualMachineSnapshot{}).
		WithValidator(&SnapshotValidator{Client: c, Policies: gate}).Complete(); err != nil {
		return err
	}
	if err := ctrl.NewWebhookManagedBy(mgr, &novacronv1.VirtualMachineRestore{}).
		WithValidator(&RestoreValidator{Client: c, Policies: gate}).Complete(); err != nil {
		return err
	}
	return ctrl.NewWebhookManagedBy(mgr, &novacronv1.VirtualMachinePolicy{}).
		WithValidator(&PolicyValidator{Policies: engine}).Complete()
}
