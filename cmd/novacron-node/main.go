// Command novacron-node is NovaCron's node agent: it discovers the node's
// GPUs and SR-IOV VFs and publishes them (the Hypervisor's device
// inventory, a DRA ResourceSlice, a heartbeat Lease), or with --once
// --dry-run prints what it would publish. It only parses flags and wires;
// the agent is in devices/.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/devices/agent"
	"github.com/novacron/operator/devices/discovery"
)

type flags struct {
	node, namespace, sysfsRoot, config, pciIDs, output string
	once, dryRun                                       bool
	interval                                           time.Duration
}

func main() {
	f := bind(flag.CommandLine)
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))

	if err := run(ctrl.SetupSignalHandler(), os.Stdout, *f); err != nil {
		fmt.Fprintln(os.Stderr, "novacron-node:", err)
		os.Exit(1)
	}
}

func bind(fs *flag.FlagSet) *flags {
	var f flags
	fs.StringVar(&f.node, "node-name", os.Getenv("NODE_NAME"), "the node this agent runs on (default $NODE_NAME)")
	fs.StringVar(&f.namespace, "namespace", envOr("POD_NAMESPACE", "novacron-system"), "namespace of the heartbeat Lease (default $POD_NAMESPACE)")
	fs.StringVar(&f.sysfsRoot, "sysfs-root", "/sys", "where the node's sysfs is mounted")
	fs.StringVar(&f.config, "config", "", "the device config: which GPUs and VF pools VMs may take (YAML; see devices/discovery.Config)")
	fs.StringVar(&f.pciIDs, "pci-ids", "", "a pci.ids file naming GPU models where NVML does not (default: /usr/share/misc/pci.ids or /usr/share/hwdata/pci.ids)")
	fs.DurationVar(&f.interval, "interval", 30*time.Second, "how often the node is discovered again and the heartbeat renewed")
	fs.BoolVar(&f.once, "once", false, "discover once and exit (with --dry-run)")
	fs.BoolVar(&f.dryRun, "dry-run", false, "publish nothing: print what would be published")
	fs.StringVar(&f.output, "o", "yaml", "output format of --dry-run: yaml")
	return &f
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func run(ctx context.Context, w io.Writer, f flags) error {
	if f.node == "" {
		return fmt.Errorf("--node-name (or $NODE_NAME) is required")
	}
	if f.once != f.dryRun {
		return fmt.Errorf("--once and --dry-run go together: they print what the node would publish; without both the agent publishes until stopped")
	}
	if f.output != "yaml" {
		return fmt.Errorf("-o %s: only yaml is supported", f.output)
	}
	cfg, err := discovery.LoadConfig(f.config)
	if err != nil {
		return err
	}
	paths := discovery.PCIIDsPaths
	if f.pciIDs != "" {
		paths = []string{f.pciIDs}
	}
	ids, err := discovery.LoadPCIIDs(paths...)
	if err != nil {
		return err
	}
	if f.dryRun {
		inv, err := discovery.Discover(f.sysfsRoot, cfg, ids, discovery.SystemNVML{})
		if err != nil {
			return err
		}
		out, err := discovery.Report(f.node, f.sysfsRoot, inv)
		if err != nil {
			return err
		}
		_, err = w.Write(out)
		return err
	}
	rest, err := ctrl.GetConfig()
	if err != nil {
		return err
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := novacronv1.AddToScheme(scheme); err != nil {
		return err
	}
	c, err := client.New(rest, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(rest)
	if err != nil {
		return err
	}
	a, err := agent.New(ctx, agent.Options{Node: f.node, Namespace: f.namespace, SysfsRoot: f.sysfsRoot, ConfigPath: f.config, IDs: ids,
		NVML: discovery.RememberNVML(discovery.SystemNVML{}), Interval: f.interval, Client: c, Kube: kube})
	if err != nil {
		return err
	}
	defer a.Stop()
	a.Run(ctx)
	return nil
}
