// Package manager assembles the operator: a controller-runtime manager with
// NovaCron's scheme, caches, metrics and controllers. cmd/novacron-operator
// fills Options from flags; tests and `novacron dev` fill them directly.
package manager

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/migration"
	"github.com/novacron/operator/operator/domain"
	"github.com/novacron/operator/operator/hooks"
	"github.com/novacron/operator/operator/hypervisors"
	"github.com/novacron/operator/operator/launcher"
	"github.com/novacron/operator/operator/livemigration"
	"github.com/novacron/operator/operator/metrics"
	"github.com/novacron/operator/operator/policy"
	"github.com/novacron/operator/operator/provider"
	"github.com/novacron/operator/operator/reachability"
	"github.com/novacron/operator/operator/snapshot"
	"github.com/novacron/operator/operator/usage"
	"github.com/novacron/operator/operator/vm"
	novawebhook "github.com/novacron/operator/operator/webhook"
	"github.com/novacron/operator/policies"
)

// Options configures the operator.
type Options struct {
	// MetricsAddr serves /metrics ("0" turns it off), over HTTPS to callers
	// the API server authenticates and lets `get` the URL /metrics (the
	// ClusterRole novacron-metrics-reader): the metrics name every tenant's
	// VMs, their nodes and their use.
	MetricsAddr string
	// MetricsOpen serves /metrics over plain HTTP to anyone: for tests that
	// read what the metrics say.
	MetricsOpen bool
	// ProbeAddr serves /healthz and /readyz ("0" turns it off).
	ProbeAddr string
	// LeaderElection makes only one replica act at a time.
	LeaderElection bool
	// Namespace is the operator's own namespace (image catalog, leader lease).
	Namespace string

	Launcher launcher.Config
	// StopGracePeriod is how long a guest gets after ACPI shutdown.
	StopGracePeriod time.Duration
	// SerialLogDir is where guests' serial consoles are written on each node.
	SerialLogDir string
	// MaxConcurrentReconciles per controller.
	MaxConcurrentReconciles int
	// StatsInterval is how often running VMs' usage metrics are refreshed.
	StatsInterval time.Duration
	// UnreachableRetry is how soon an unreachable hypervisor is tried again.
	UnreachableRetry time.Duration
	// HypervisorProbeInterval is how often every Hypervisor's Reachable
	// condition is checked.
	HypervisorProbeInterval time.Duration

	// Clock drives snapshot schedules (tests step a fake one); nil is the
	// real clock.
	Clock clock.PassiveClock
	// ScheduleResync bounds how long a snapshot schedule goes without a look
	// (tests make it short to follow a fake clock).
	ScheduleResync time.Duration
	// SnapshotRetryBase is the first wait before a failed snapshot is tried
	// again (doubling up to five tries).
	SnapshotRetryBase time.Duration

	// MigrationLimits bound live migrations under way (in the cluster,
	// leaving a node, per namespace, kept for drains, waiting for a target);
	// MigrationPoll is how often a running one's progress is read.
	MigrationLimits migration.Limits
	MigrationPoll   time.Duration

	// RebalanceInterval runs the rebalancer that often (0: off); the rest
	// configure it (see livemigration.Rebalancer).
	RebalanceInterval time.Duration
	RebalanceDryRun   bool
	RebalanceMeasured bool
	Rebalance         migration.RebalanceConfig
	RebalanceCooldown time.Duration

	// HookEgress is where tenants' HTTP hooks may not go (and, for dev and
	// tests, the exceptions); the API server's own addresses are added.
	HookEgress hooks.Egress

	// Webhooks turns the admission webhook server on.
	Webhooks bool
	// Admission is what the webhooks allow (the schedulers VMs may name).
	Admission novawebhook.Config
	// WebhookHost and WebhookPort are where the webhook server listens.
	WebhookHost string
	WebhookPort int
	// WebhookCertDir holds tls.crt and tls.key (cert-manager mounts them).
	WebhookCertDir string
	// WebhookSelfSignedHosts, when set, makes the operator write a self-signed
	// CA and serving certificate for these hosts into WebhookCertDir at start,
	// for local runs without cert-manager (the CA is in ca.crt there).
	WebhookSelfSignedHosts []string
}

// DefaultOptions are the settings the operator runs with unless told otherwise.
func DefaultOptions() Options {
	return Options{
		MetricsAddr:       ":8080",
		ProbeAddr:         ":8081",
		Namespace:         "novacron-system",
		Rebalance:         migration.RebalanceConfig{High: 0.8, Target: 0.75, MaxMoves: 10},
		RebalanceCooldown: time.Hour,
		Launcher:          launcher.Config{Image: "registry.k8s.io/pause:3.10", CPUAllocationRatio: 1, MemoryOvercommitRatio: 1},
		StopGracePeriod:   2 * time.Minute,
		// libvirt creates this folder on every node; it does not create parents.
		SerialLogDir:            "/var/log/libvirt/qemu",
		MaxConcurrentReconciles: 4,
		StatsInterval:           30 * time.Second,
		UnreachableRetry:        10 * time.Second,
		HypervisorProbeInterval: 30 * time.Second,
		Webhooks:                true,
		WebhookPort:             9443,
		WebhookCertDir:          "/tmp/k8s-webhook-server/serving-certs",
	}
}

// Scheme returns the scheme the operator speaks.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(novacronv1.AddToScheme(s))
	return s
}

// Leader election keeps its lease in the operator's namespace, and says who
// became leader in a core Event there (client-go's leader election records
// with the core API, not events.k8s.io).
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=novacron-system,resources=leases,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",namespace=novacron-system,resources=events,verbs=create;patch

// The metrics server asks the API server who calls and whether they may.
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create

// metricsOptions serves /metrics behind the API server's authentication
// (TokenReview) and authorization (SubjectAccessReview), with a self-signed
// certificate unless one is mounted.
func metricsOptions(opts Options) metricsserver.Options {
	if opts.MetricsOpen {
		return metricsserver.Options{BindAddress: opts.MetricsAddr}
	}
	return metricsserver.Options{BindAddress: opts.MetricsAddr, SecureServing: true,
		FilterProvider: filters.WithAuthenticationAndAuthorization, TLSOpts: []func(*tls.Config){HTTP1Only}}
}

// The operator asks who it is (whoAmI).
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=selfsubjectreviews,verbs=create

// whoAmI is the user name the API server knows the operator by: the webhooks
// let only it make what only NovaCron makes.
func whoAmI(ctx context.Context, cfg *rest.Config) (string, error) {
	c, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		return "", err
	}
	review := &authenticationv1.SelfSubjectReview{}
	if err := c.Create(ctx, review); err != nil {
		return "", fmt.Errorf("asking the API server who the operator is: %w", err)
	}
	return review.Status.UserInfo.Username, nil
}

// HTTP1Only keeps a TLS server to HTTP/1.1: HTTP/2's stream handling gave
// anyone who can reach a port ways to exhaust the server (rapid reset,
// CVE-2023-44487), and the API server's webhook calls need no HTTP/2.
func HTTP1Only(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }

// New builds the manager with every controller registered.
func New(cfg *rest.Config, opts Options, hypervisors provider.Connector) (ctrl.Manager, error) {
	if opts.Webhooks && len(opts.WebhookSelfSignedHosts) > 0 {
		if _, err := novawebhook.SelfSignedCerts(opts.WebhookCertDir, opts.WebhookSelfSignedHosts); err != nil {
			return nil, fmt.Errorf("writing self-signed webhook certificates: %w", err)
		}
	}
	// Cache only the pods and Jobs NovaCron made, not every pod in the cluster.
	owned, err := labels.NewRequirement(novacronv1.LabelComponent, selection.Exists, nil)
	if err != nil {
		return nil, err
	}
	ownedSelector := labels.NewSelector().Add(*owned)
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 Scheme(),
		Metrics:                metricsOptions(opts),
		HealthProbeBindAddress: opts.ProbeAddr,
		WebhookServer: webhook.NewServer(webhook.Options{
			Host: opts.WebhookHost, Port: opts.WebhookPort, CertDir: opts.WebhookCertDir,
			TLSOpts: []func(*tls.Config){HTTP1Only},
		}),
		LeaderElection:          opts.LeaderElection,
		LeaderElectionID:        "novacron-operator.novacron.io",
		LeaderElectionNamespace: opts.Namespace,
		// The dev command and tests may restart the operator within one process.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}:  {Label: ownedSelector},
			&batchv1.Job{}: {Label: ownedSelector},
		}},
	})
	if err != nil {
		return nil, fmt.Errorf("creating manager: %w", err)
	}
	if err := metrics.Register(crmetrics.Registry, mgr.GetCache()); err != nil {
		return nil, err
	}
	if err := policies.RegisterMetrics(crmetrics.Registry); err != nil {
		return nil, err
	}
	engine, err := policies.NewEngine()
	if err != nil {
		return nil, err
	}
	policyLoader := &policy.Reconciler{Client: mgr.GetClient(), Engine: engine, Recorder: mgr.GetEventRecorder("novacron-policy")}
	if err := policyLoader.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the VirtualMachinePolicy controller: %w", err)
	}
	opts.HookEgress.Deny = append(slices.Clone(opts.HookEgress.Deny), apiServerAddrs(mgr.GetConfig().Host)...)
	opts.Admission.HookEgress = opts.HookEgress
	if opts.Admission.Operator, err = whoAmI(context.Background(), cfg); err != nil {
		return nil, err
	}
	if opts.Webhooks {
		if err := novawebhook.Setup(mgr, engine, opts.Admission); err != nil {
			return nil, fmt.Errorf("setting up webhooks: %w", err)
		}
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("policies", policyLoader.Synced); err != nil {
		return nil, err
	}
	// A replica the webhook Service sends admission requests to must be
	// able to answer them: not ready until its webhook server serves TLS.
	if opts.Webhooks {
		if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
			return nil, err
		}
	}
	if err := addControllers(mgr, opts, hypervisors, engine); err != nil {
		return nil, err
	}
	return mgr, nil
}

// addControllers registers the controllers that act on VMs, with what they
// share: the VMs-by-node index, the domain builder and the measured-usage
// store.
func addControllers(mgr ctrl.Manager, opts Options, connector provider.Connector, engine *policies.Engine) error {
	if err := hypervisors.IndexSlices(context.Background(), mgr.GetFieldIndexer()); err != nil {
		return err
	}
	if err := hypervisors.IndexVMs(context.Background(), mgr.GetFieldIndexer()); err != nil {
		return err
	}
	domains := &domain.Builder{APIReader: mgr.GetAPIReader(), Namespace: opts.Namespace, SerialLogDir: opts.SerialLogDir}
	measured := &usage.Store{}
	vms := &vm.Reconciler{
		Hooks:            hooks.NewCaller(opts.HookEgress.Client(), mgr.GetAPIReader()),
		Client:           mgr.GetClient(),
		APIReader:        mgr.GetAPIReader(),
		Recorder:         mgr.GetEventRecorder("novacron-operator"),
		Hypervisors:      connector,
		Domains:          domains,
		Launcher:         opts.Launcher,
		Usage:            measured,
		StopGracePeriod:  opts.StopGracePeriod,
		StatsInterval:    opts.StatsInterval,
		UnreachableRetry: opts.UnreachableRetry,
	}
	if err := vms.SetupWithManager(mgr, opts.MaxConcurrentReconciles); err != nil {
		return fmt.Errorf("setting up the VirtualMachine controller: %w", err)
	}
	migrations := &livemigration.Reconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: mgr.GetEventRecorder("novacron-migration"),
		Hypervisors: connector, Targets: domains, Launcher: opts.Launcher,
		Limits: opts.MigrationLimits, Poll: opts.MigrationPoll}
	if err := migrations.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the VirtualMachineMigration controller: %w", err)
	}
	if opts.RebalanceInterval > 0 {
		if err := mgr.Add(&livemigration.Rebalancer{Client: mgr.GetClient(), Policies: engine, Namespace: opts.Namespace, Launcher: opts.Launcher,
			Interval: opts.RebalanceInterval, Config: opts.Rebalance, Cooldown: opts.RebalanceCooldown, DryRun: opts.RebalanceDryRun,
			Measured: opts.RebalanceMeasured, Usage: measured}); err != nil {
			return err
		}
	}
	probe := &reachability.Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("novacron-reachability"), Hypervisors: connector, Interval: opts.HypervisorProbeInterval}
	if err := probe.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the hypervisor reachability controller: %w", err)
	}
	drains := &livemigration.DrainReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("novacron-drain"), Launcher: opts.Launcher}
	if err := drains.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the drain controller: %w", err)
	}
	snaps := &snapshot.Reconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: mgr.GetEventRecorder("novacron-snapshot"),
		Hypervisors: connector, Clock: opts.Clock, RetryBase: opts.SnapshotRetryBase}
	if err := snaps.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the VirtualMachineSnapshot controller: %w", err)
	}
	restores := &snapshot.RestoreReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("novacron-restore"), Hypervisors: connector, Clock: opts.Clock}
	if err := restores.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the VirtualMachineRestore controller: %w", err)
	}
	schedules := &snapshot.ScheduleReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("novacron-snapshot"), Clock: opts.Clock, Resync: opts.ScheduleResync}
	if err := schedules.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the snapshot schedule controller: %w", err)
	}
	return nil
}

// apiServerAddrs are the addresses the operator reaches the API server at,
// refused to tenant hooks: the operator's requests there carry its own
// identity, and hooks would otherwise probe it from inside the cluster.
func apiServerAddrs(host string) []netip.Prefix {
	u, err := url.Parse(host)
	if err != nil || u.Hostname() == "" {
		return nil
	}
	ips, err := net.LookupIP(u.Hostname())
	if err != nil {
		return nil
	}
	var out []netip.Prefix
	for _, ip := range ips {
		if a, ok := netip.AddrFromSlice(ip); ok {
			a = a.Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return out
}
