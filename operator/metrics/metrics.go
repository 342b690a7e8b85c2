// Package metrics defines the operator's Prometheus metrics, with the names the
// README documents, and registers them with controller-runtime's registry (which
// the manager serves on its metrics endpoint).
package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

var (
	// ReconcileTotal counts reconciles by controller and result.
	ReconcileTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "novacron_reconcile_total",
		Help: "Reconciliations by controller and result (success, error, requeue, conflict).",
	}, []string{"controller", "result"})

	// ReconcileDuration times reconciles by controller.
	ReconcileDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "novacron_reconcile_duration_seconds",
		Help:    "Time one reconciliation took, by controller.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
	}, []string{"controller"})

	// VMCPUUsage is each running VM's CPU use in cores.
	VMCPUUsage = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "novacron_vm_cpu_usage_cores",
		Help: "CPU used by a running VM, in cores, from the hypervisor's domain stats.",
	}, []string{"namespace", "name", "node"})

	// VMMemoryUsage is each running VM's memory use in bytes.
	VMMemoryUsage = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "novacron_vm_memory_usage_bytes",
		Help: "Memory used by a running VM, in bytes, from the hypervisor's domain stats.",
	}, []string{"namespace", "name", "node"})
)

var (
	snapshotsCreated = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "novacron_snapshot_created_total",
		Help: "VM snapshots taken, by namespace and VM.",
	}, []string{"namespace", "vm"})
	snapshotsFailed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "novacron_snapshot_failed_total",
		Help: "VM snapshots that failed for good, by namespace and VM.",
	}, []string{"namespace", "vm"})
	snapshotDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "novacron_snapshot_duration_seconds",
		Help:    "Time the hypervisor took to take a snapshot.",
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
	})
	snapshotLastSuccess = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "novacron_snapshot_last_success_timestamp_seconds",
		Help: "When the VM's last snapshot was taken (Unix time); alert on its age.",
	}, []string{"namespace", "vm"})
)

var (
	migrationsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "novacron_migration_total",
		Help: "Live migrations that ended, by result (Succeeded, Failed, Cancelled).",
	}, []string{"result"})
	migrationsRunning = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "novacron_migration_running",
		Help: "Live migrations whose libvirt job is running.",
	})
	migrationDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "novacron_migration_duration_seconds",
		Help:    "Wall time of live migrations that ran, from the libvirt call to its end.",
		Buckets: prometheus.ExponentialBuckets(0.5, 2, 12),
	})
	migrationDowntime = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "novacron_migration_downtime_seconds",
		Help:    "Guest pause at the switch-over of succeeded live migrations.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
	})
)

// MigrationStarted records a migration job starting.
func MigrationStarted() { migrationsRunning.Inc() }

// MigrationFinished records a migration's end; started is when its job began
// (nil if it never ran).
func MigrationFinished(result string, started *metav1.Time, p *novacronv1.MigrationProgress) {
	migrationsTotal.WithLabelValues(result).Inc()
	if started == nil {
		return
	}
	migrationsRunning.Dec()
	migrationDuration.Observe(time.Since(started.Time).Seconds())
	if p != nil && result == string(novacronv1.MigrationSucceeded) {
		migrationDowntime.Observe(float64(p.DowntimeMilliseconds) / 1000)
	}
}

// SnapshotTaken records a snapshot of a VM that took d and was taken at.
func SnapshotTaken(namespace, vm string, d time.Duration, at time.Time) {
	snapshotsCreated.WithLabelValues(namespace, vm).Inc()
	snapshotDuration.Observe(d.Seconds())
	snapshotLastSuccess.WithLabelValues(namespace, vm).Set(float64(at.Unix()))
}

// SnapshotFailed records a snapshot of a VM that failed for good.
func SnapshotFailed(namespace, vm string) {
	snapshotsFailed.WithLabelValues(namespace, vm).Inc()
}

// vmTotalCollector is registered once per process; each new manager (the dev
// command and tests restart the operator in-process) points it at its cache.
var vmTotalCollector = &vmTotal{}

// Register adds the metrics to reg. novacron_vm_total counts VMs by phase from
// the reader (the manager's cache) at scrape time, so it is never stale.
func Register(reg prometheus.Registerer, reader client.Reader) error {
	vmTotalCollector.setReader(reader)
	for _, c := range []prometheus.Collector{ReconcileTotal, ReconcileDuration, VMCPUUsage, VMMemoryUsage, vmTotalCollector,
		snapshotsCreated, snapshotsFailed, snapshotDuration, snapshotLastSuccess,
		migrationsTotal, migrationsRunning, migrationDuration, migrationDowntime} {
		if err := reg.Register(c); err != nil {
			if _, dup := err.(prometheus.AlreadyRegisteredError); !dup {
				return err
			}
		}
	}
	return nil
}

// SetVMUsage sets a running VM's usage gauges; cores is only known from a
// VM's second stats sample on (nil before).
func SetVMUsage(namespace, name, node string, cores *float64, memoryBytes float64) {
	VMMemoryUsage.WithLabelValues(namespace, name, node).Set(memoryBytes)
	if cores != nil {
		VMCPUUsage.WithLabelValues(namespace, name, node).Set(*cores)
	}
}

// ForgetVM drops a VM's usage series once it no longer runs.
func ForgetVM(namespace, name string) {
	VMCPUUsage.DeletePartialMatch(prometheus.Labels{"namespace": namespace, "name": name})
	VMMemoryUsage.DeletePartialMatch(prometheus.Labels{"namespace": namespace, "name": name})
}

// ForgetDeletedVM drops every series of a deleted VM.
func ForgetDeletedVM(namespace, name string) {
	ForgetVM(namespace, name)
	for _, v := range []*prometheus.GaugeVec{snapshotLastSuccess} {
		v.DeletePartialMatch(prometheus.Labels{"namespace": namespace, "vm": name})
	}
	for _, v := range []*prometheus.CounterVec{snapshotsCreated, snapshotsFailed} {
		v.DeletePartialMatch(prometheus.Labels{"namespace": namespace, "vm": name})
	}
}

var vmTotalDesc = prometheus.NewDesc("novacron_vm_total", "VirtualMachines by phase.", []string{"phase"}, nil)

type vmTotal struct {
	mu     sync.Mutex
	reader client.Reader
}

func (v *vmTotal) setReader(r client.Reader) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.reader = r
}

func (v *vmTotal) Describe(ch chan<- *prometheus.Desc) { ch <- vmTotalDesc }

func (v *vmTotal) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v.mu.Lock()
	reader := v.reader
	v.mu.Unlock()
	var vms novacronv1.VirtualMachineList
	if err := reader.List(ctx, &vms); err != nil {
		ch <- prometheus.NewInvalidMetric(vmTotalDesc, err)
		return
	}
	counts := map[novacronv1.VMPhase]int{}
	for _, p := range []novacronv1.VMPhase{novacronv1.VMPending, novacronv1.VMScheduling, novacronv1.VMScheduled, novacronv1.VMStarting,
		novacronv1.VMRunning, novacronv1.VMStopping, novacronv1.VMStopped, novacronv1.VMMigrating, novacronv1.VMFailed, novacronv1.VMUnknown} {
		counts[p] = 0
	}
	for _, vm := range vms.Items {
		phase := vm.Status.Phase
		if phase == "" {
			phase = novacronv1.VMPending
		}
		counts[phase]++
	}
	for phase, n := range counts {
		ch <- prometheus.MustNewConstMetric(vmTotalDesc, prometheus.GaugeValue, float64(n), string(phase))
	}
}

// Instrument wraps a reconciler so every call counts in novacron_reconcile_total
// (result success, requeue, error, or conflict: a write that lost to a newer
// version of the object, see package conflict) and
// novacron_reconcile_duration_seconds.
func Instrument(controller string, r reconcile.Reconciler) reconcile.Reconciler {
	return reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
		start := time.Now()
		res, err := r.Reconcile(ctx, req)
		ReconcileDuration.WithLabelValues(controller).Observe(time.Since(start).Seconds())
		result := "success"
		switch {
		case apierrors.IsConflict(err):
			result = "conflict"
		case err != nil:
			result = "error"
		case res.RequeueAfter > 0:
			result = "requeue"
		}
		ReconcileTotal.WithLabelValues(controller, result).Inc()
		return res, err
	})
}
