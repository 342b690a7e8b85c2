// Command novacron is the developer's tool. `novacron dev` runs the whole
// system on this machine with no cluster (see devenv/ for what it simulates).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/go-logr/logr"
	"go.uber.org/zap/zapcore"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/novacron/operator/devenv"
)

const usage = `usage: novacron dev [flags]

Runs NovaCron on this machine: etcd, kube-apiserver, the operator, novacron-scheduler
and simulated hypervisor nodes. Ctrl-C stops all of it.

flags:
`

func main() {
	if len(os.Args) < 2 || os.Args[1] != "dev" {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	fs := flag.NewFlagSet("novacron dev", flag.ExitOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage); fs.PrintDefaults() }
	assets := fs.String("assets", defaultAssets(), "folder with kube-apiserver, etcd and kubectl (`make envtest` builds them)")
	nodes := fs.Int("nodes", 0, "hypervisor nodes to register, cycling through the profile's kinds (0: one of each)")
	profile := fs.String("node-profile", "", "node profile file (default: the built-in devenv/nodes.yaml)")
	lab := fs.Bool("lab", false, "back the nodes with real libvirtd + QEMU lab nodes (root; test/lab/lab.sh installs them) instead of libvirt's test driver")
	labScript := fs.String("lab-script", "test/lab/lab.sh", "the lab script --lab runs")
	metrics := fs.String("metrics-bind-address", "127.0.0.1:8080", "where the operator serves /metrics (0: off)")
	image := fs.String("image", "", "run the operator and novacron-scheduler as the shipped Deployments, in podman from this image (make docker-build CONTAINER_TOOL=podman); needs --lab")
	verbose := fs.Bool("v", false, "show the components' logs")
	_ = fs.Parse(os.Args[2:])

	level := zapcore.ErrorLevel
	if *verbose {
		level = zapcore.InfoLevel
	}
	logger := zap.New(zap.Level(level), zap.WriteTo(os.Stderr))
	ctrl.SetLogger(devenv.QuietStartRetries(logger))
	// kube-scheduler and client-go log through klog, at error level even for
	// harmless start-up notes; show them only when asked.
	klog.SetLogger(logr.Discard())
	if *verbose {
		klog.SetLogger(logger)
	}

	cfg := devenv.Config{AssetsDir: *assets, Nodes: *nodes, MetricsAddr: *metrics, Image: *image, Out: os.Stdout}
	if *profile != "" {
		raw, err := os.ReadFile(*profile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "novacron dev:", err)
			os.Exit(1)
		}
		cfg.Profile = raw
	}
	if *lab {
		abs, err := filepath.Abs(*labScript)
		if err != nil {
			fmt.Fprintln(os.Stderr, "novacron dev:", err)
			os.Exit(1)
		}
		cfg.LabScript = abs
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := devenv.Run(ctx, cfg, func(r devenv.Ready) {
		fmt.Printf(`
NovaCron is running: nodes %v. In another terminal:

  export KUBECONFIG=%s
  alias kubectl=%s   # kubectl of the API server's version
  kubectl apply -f manifests/samples/vm-basic.yaml
  kubectl get vm -w

Operator metrics: %s. Ctrl-C stops everything.
`, r.Nodes, r.Kubeconfig, r.Kubectl, metricsURL(*metrics))
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "novacron dev:", err)
		os.Exit(1)
	}
	fmt.Println("novacron dev: stopped")
}

// defaultAssets is $KUBEBUILDER_ASSETS, else the folder `make envtest` last built.
func defaultAssets() string {
	if d := os.Getenv("KUBEBUILDER_ASSETS"); d != "" {
		return d
	}
	d, _ := filepath.Abs(filepath.Join("bin", "k8s", "current"))
	return d
}

func metricsURL(addr string) string {
	if addr == "0" {
		return "off"
	}
	return "http://" + addr + "/metrics"
}
