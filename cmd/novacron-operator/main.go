// Command novacron-operator runs NovaCron's controllers. It only parses flags
// and wires; the operator itself is in operator/.
package main

import (
	// Snapshot schedules name IANA time zones; the image has no zoneinfo.
	_ "time/tzdata"

	"flag"
	"fmt"
	"os"
	"strings"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/novacron/operator/operator/hooks"
	"github.com/novacron/operator/operator/manager"
	"github.com/novacron/operator/operator/provider/libvirt"
)

func main() {
	opts := manager.DefaultOptions()
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		opts.Namespace = ns
	}
	flag.StringVar(&opts.MetricsAddr, "metrics-bind-address", opts.MetricsAddr, "address /metrics is served on; 0 turns it off")
	flag.StringVar(&opts.ProbeAddr, "health-probe-bind-address", opts.ProbeAddr, "address /healthz and /readyz are served on")
	flag.BoolVar(&opts.LeaderElection, "leader-elect", opts.LeaderElection, "elect a leader so only one replica acts at a time")
	flag.StringVar(&opts.Namespace, "namespace", opts.Namespace, "the operator's namespace (image catalog, leader lease); defaults to $POD_NAMESPACE")
	flag.StringVar(&opts.Launcher.Image, "launcher-image", opts.Launcher.Image, "image of the launcher pods that reserve VM capacity")
	flag.Float64Var(&opts.Launcher.CPUAllocationRatio, "cpu-allocation-ratio", opts.Launcher.CPUAllocationRatio, "vCPUs per requested CPU in launcher pods (CPU overcommit)")
	flag.Float64Var(&opts.Launcher.MemoryOvercommitRatio, "memory-overcommit-ratio", opts.Launcher.MemoryOvercommitRatio, "guest memory per requested byte in launcher pods")
	flag.BoolVar(&opts.Launcher.AlignNUMA, "numa-alignment", opts.Launcher.AlignNUMA, "have DRA take all of a VM's GPUs and VFs from one NUMA node (a matchAttribute constraint on resource.kubernetes.io/numaNode in its claim)")
	flag.DurationVar(&opts.StopGracePeriod, "stop-grace-period", opts.StopGracePeriod, "how long a guest gets to power off before it is forced off")
	flag.StringVar(&opts.SerialLogDir, "serial-log-dir", opts.SerialLogDir, "folder on each node where guest serial consoles are logged")
	flag.DurationVar(&opts.HypervisorProbeInterval, "hypervisor-probe-interval", opts.HypervisorProbeInterval, "how often each Hypervisor's Reachable condition is checked")
	flag.IntVar(&opts.MaxConcurrentReconciles, "max-concurrent-reconciles", opts.MaxConcurrentReconciles, "VMs reconciled in parallel")
	flag.BoolVar(&opts.Webhooks, "webhooks", opts.Webhooks, "serve the admission webhooks (defaults and policies)")
	flag.IntVar(&opts.WebhookPort, "webhook-port", opts.WebhookPort, "port of the admission webhook server")
	flag.StringVar(&opts.WebhookCertDir, "webhook-cert-dir", opts.WebhookCertDir, "folder with the webhook server's tls.crt and tls.key")
	flag.DurationVar(&opts.RebalanceInterval, "rebalance-interval", opts.RebalanceInterval, "run the rebalancer this often (0: off)")
	flag.BoolVar(&opts.RebalanceDryRun, "rebalance-dry-run", opts.RebalanceDryRun, "only write the rebalancer's plan to the ConfigMap novacron-rebalance-plan")
	flag.BoolVar(&opts.RebalanceMeasured, "rebalance-measured", opts.RebalanceMeasured, "weigh VMs by their measured use (domain stats) where known, instead of their requested size")
	flag.Float64Var(&opts.Rebalance.High, "rebalance-high", opts.Rebalance.High, "node utilisation above which the rebalancer moves VMs off it")
	flag.Float64Var(&opts.Rebalance.Target, "rebalance-target", opts.Rebalance.Target, "utilisation the rebalancer unloads a node to, and fills targets up to (below --rebalance-high)")
	flag.IntVar(&opts.Rebalance.MaxMoves, "rebalance-max-moves", opts.Rebalance.MaxMoves, "most migrations one rebalance round starts")
	flag.DurationVar(&opts.RebalanceCooldown, "rebalance-cooldown", opts.RebalanceCooldown, "a VM the rebalancer moved is not moved again for this long")
	flag.IntVar(&opts.MigrationLimits.MaxParallel, "migration-max-parallel", opts.MigrationLimits.MaxParallel, "live migrations at once in the cluster (0: 4)")
	flag.IntVar(&opts.MigrationLimits.MaxOutbound, "migration-max-outbound-per-node", opts.MigrationLimits.MaxOutbound, "live migrations at once leaving one node (0: 2)")
	flag.IntVar(&opts.MigrationLimits.MaxPerNamespace, "migration-max-per-namespace", opts.MigrationLimits.MaxPerNamespace, "live migrations users asked for at once in one namespace (0: 2); drains and the rebalancer are not counted")
	flag.IntVar(&opts.MigrationLimits.ReservedForDrain, "migration-reserved-for-drain", opts.MigrationLimits.ReservedForDrain, "of --migration-max-parallel, slots only drains may take (0: 1; -1: none)")
	flag.DurationVar(&opts.MigrationLimits.SchedulingTimeout, "migration-scheduling-timeout", opts.MigrationLimits.SchedulingTimeout, "how long a migration waits for a target node before it fails (0: 5m)")
	schedulers := flag.String("allowed-schedulers", "", "comma-separated schedulers VMs may name besides novacron-scheduler (each must count VMs as novacron-scheduler does)")
	hookDeny := flag.String("hook-deny-cidrs", "", "comma-separated CIDRs tenants' HTTP hooks may not reach besides loopback, link-local and the API server (nodes, the service network, a BMC network)")
	hookAllow := flag.String("hook-allow-cidrs", "", "comma-separated CIDRs HTTP hooks may reach even when denied (dev and tests only)")
	uris := flag.String("hypervisor-uris", "tls", "comma-separated hypervisor URI kinds to connect to: tls (qemu+tls://HOST/system, always), tcp (qemu+tcp, unencrypted), local (qemu:///system on the operator's host), test (libvirt's test driver)")
	selfSigned := flag.String("webhook-self-signed-hosts", "", "comma-separated hosts to write a self-signed webhook certificate for into --webhook-cert-dir (local runs without cert-manager)")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	if opts.Rebalance.Target >= opts.Rebalance.High {
		fmt.Fprintln(os.Stderr, "--rebalance-target must be below --rebalance-high")
		os.Exit(2)
	}
	if *schedulers != "" {
		opts.Admission.Schedulers = append([]string{"novacron-scheduler"}, strings.Split(*schedulers, ",")...)
	}
	var err error
	if opts.HookEgress.Deny, err = hooks.ParsePrefixes(splitList(*hookDeny)); err != nil {
		fmt.Fprintln(os.Stderr, "--hook-deny-cidrs:", err)
		os.Exit(2)
	}
	if opts.HookEgress.Allow, err = hooks.ParsePrefixes(splitList(*hookAllow)); err != nil {
		fmt.Fprintln(os.Stderr, "--hook-allow-cidrs:", err)
		os.Exit(2)
	}
	if *selfSigned != "" {
		opts.WebhookSelfSignedHosts = strings.Split(*selfSigned, ",")
	}

	rules, err := libvirt.ParseURIRules(*uris)
	if err != nil {
		fmt.Fprintln(os.Stderr, "--hypervisor-uris:", err)
		os.Exit(2)
	}
	hypervisors := libvirt.NewConnector(rules)
	defer hypervisors.Close()
	mgr, err := manager.New(ctrl.GetConfigOrDie(), opts, hypervisors)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}
