// Command novacron-scheduler is kube-scheduler with NovaCron's plugins; run it
// with --config pointing at a KubeSchedulerConfiguration whose profile is
// named novacron-scheduler (manifests/scheduler/).
package main

import (
	"os"

	"k8s.io/component-base/cli"

	"github.com/novacron/operator/scheduler/server"
)

func main() {
	os.Exit(cli.Run(server.NewCommand()))
}
