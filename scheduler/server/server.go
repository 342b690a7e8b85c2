// Package server runs novacron-scheduler: the upstream kube-scheduler with
// NovaCron's plugins registered. cmd/novacron-scheduler runs it as a command;
// tests and `novacron dev` run it in-process with Run.
package server

import (
	"context"

	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/cache"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
	"k8s.io/kubernetes/cmd/kube-scheduler/app/options"

	"github.com/novacron/operator/scheduler/vmplacement"
)

// SchedulerName is the profile name VMs select with schedulerName.
const SchedulerName = "novacron-scheduler"

// plugins are NovaCron's out-of-tree plugins.
func plugins() []app.Option {
	return []app.Option{app.WithPlugin(vmplacement.Name, vmplacement.New)}
}

// NewCommand is kube-scheduler's command with NovaCron's plugins.
func NewCommand() *cobra.Command {
	cmd := app.NewSchedulerCommand(plugins()...)
	cmd.Use = "novacron-scheduler"
	return cmd
}

// Run runs the scheduler in this process with the KubeSchedulerConfiguration
// in configFile (which names the kubeconfig) until ctx ends. It serves no
// health or metrics port. Only one may run per process (kube-scheduler
// registers its configuration globally).
func Run(ctx context.Context, configFile string) error {
	opts := options.NewOptions()
	opts.ConfigFile = configFile
	opts.SecureServing.BindPort = 0
	name, err := cache.NewInformerName("novacron-scheduler")
	if err != nil {
		return err
	}
	opts.InformerName = name
	cc, sched, err := app.Setup(ctx, opts, plugins()...)
	if err != nil {
		return err
	}
	return app.Run(ctx, cc, sched)
}
