package devenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// kcmControllers are the controllers of kube-controller-manager that a
// cluster runs and NovaCron's behaviour depends on: deleting a namespace
// deletes its VMs (and waits for their finalizers), owner references are
// garbage-collected, nodes whose kubelet stops renewing its Lease are marked
// and tainted, quotas count usage, service accounts get tokens and every
// namespace kube-root-ca.crt, the tenant roles aggregate into edit/view, and
// a launcher pod gets its device claim from its VM's ResourceClaimTemplate
// (and gives it back when it goes).
var kcmControllers = []string{
	"namespace-controller",
	"garbage-collector-controller",
	"node-lifecycle-controller",
	"taint-eviction-controller",
	"resourcequota-controller",
	"serviceaccount-controller",
	"serviceaccount-token-controller",
	"root-ca-certificate-publisher-controller",
	"clusterrole-aggregation-controller",
	"resourceclaim-controller",
	// For the shipped Deployments (novacron dev --image): their ReplicaSets
	// and pods, the webhook Service's endpoints, the PodDisruptionBudget.
	"deployment-controller",
	"replicaset-controller",
	"endpointslice-controller",
	"endpoints-controller",
	"disruption-controller",
}

// controllerManager runs the real kube-controller-manager against env until
// ctx ends, with kcmControllers.
func controllerManager(ctx context.Context, env *envtest.Environment, assets, kubeconfig, dir string) error {
	return ControllerManager(ctx, env, assets, kubeconfig, dir, kcmControllers)
}

// ControllerManager runs the real kube-controller-manager with controllers
// against env until ctx ends (test suites run the few they need). Its files
// (the cluster's CA) live in dir; it signs service account tokens with the
// key envtest gave the API server.
func ControllerManager(ctx context.Context, env *envtest.Environment, assets, kubeconfig, dir string, controllers []string) error {
	ca := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(ca, env.Config.CAData, 0o600); err != nil {
		return err
	}
	out := &tail{}
	cmd := exec.CommandContext(ctx, filepath.Join(assets, "kube-controller-manager"),
		"--kubeconfig="+kubeconfig,
		"--controllers="+strings.Join(controllers, ","),
		"--root-ca-file="+ca,
		"--service-account-private-key-file="+filepath.Join(env.ControlPlane.APIServer.CertDir, "sa-signer.key"),
		"--use-service-account-credentials=false",
		"--leader-elect=false",
		"--secure-port=0",
	)
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Run()
	if ctx.Err() != nil {
		return nil
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) || err == nil {
		return fmt.Errorf("kube-controller-manager stopped (%v):\n%s", err, out.String())
	}
	return err
}
