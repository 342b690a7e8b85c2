// Package testenv starts a real kube-apiserver and etcd (envtest) with the
// NovaCron CRDs installed, for integration tests. The binaries come from
// `make envtest`, which builds them from the Go module proxy.
package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

// Env is a running API server with the NovaCron CRDs.
type Env struct {
	env *envtest.Environment

	// Config reaches the API server as an administrator.
	Config *rest.Config
	// Client is a controller-runtime client over Scheme.
	Client client.Client
	// Scheme knows the Kubernetes built-in and NovaCron types.
	Scheme *runtime.Scheme
	// Kubeconfig is the path of a kubeconfig file for the administrator.
	Kubeconfig string
	// KubectlPath is the kubectl built by `make envtest`, of the API server's version.
	KubectlPath string
	// RepoRoot is the repository's top folder.
	RepoRoot string
	// WebhookHost, WebhookPort and WebhookCertDir are where the API server
	// expects the webhook server, with WithWebhooks.
	WebhookHost    string
	WebhookPort    int
	WebhookCertDir string
}

// NewScheme returns a scheme with the Kubernetes built-in and NovaCron types.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(apiextensionsv1.AddToScheme(s))
	utilruntime.Must(novacronv1.AddToScheme(s))
	return s
}

// RepoRoot finds the repository's top folder from the working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("testenv: no go.mod above the working directory")
		}
		dir = parent
	}
}

// assetsDir is where the envtest binaries are: KUBEBUILDER_ASSETS, or the
// folder `make envtest` last built.
func assetsDir(root string) (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		dir = filepath.Join(root, "bin", "k8s", "current")
	}
	for _, bin := range []string{"kube-apiserver", "etcd", "kubectl"} {
		if _, err := os.Stat(filepath.Join(dir, bin)); err != nil {
			return "", fmt.Errorf("testenv: %s not found in %s: run `make envtest` (or `make test`, which does it) first", bin, dir)
		}
	}
	return dir, nil
}

// Option changes how Start sets up the API server.
type Option func(*envtest.Environment, string)

// WithWebhooks installs the webhook configurations from manifests/webhook,
// pointed at a local webhook server (see Env.WebhookHost and friends).
func WithWebhooks() Option {
	return func(e *envtest.Environment, root string) {
		e.WebhookInstallOptions = envtest.WebhookInstallOptions{Paths: []string{filepath.Join(root, "manifests", "webhook")}}
	}
}

// WithTestCRDs also installs the CRDs of other projects NovaCron works with
// (Multus' NetworkAttachmentDefinition), from manifests/dev/crds.
func WithTestCRDs() Option {
	return func(e *envtest.Environment, root string) {
		e.CRDDirectoryPaths = append(e.CRDDirectoryPaths, filepath.Join(root, "manifests", "dev", "crds"))
	}
}

// Start starts etcd and kube-apiserver and installs the CRDs from
// manifests/crd/bases. Call Stop when done; TestMain is the usual place.
func Start(opts ...Option) (*Env, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	assets, err := assetsDir(root)
	if err != nil {
		return nil, err
	}
	scheme := NewScheme()
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join(root, "manifests", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		Scheme:                scheme,
	}
	for _, o := range opts {
		o(env, root)
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("testenv: starting kube-apiserver and etcd from %s: %w", assets, err)
	}
	e := &Env{env: env, Config: cfg, Scheme: scheme, RepoRoot: root, KubectlPath: filepath.Join(assets, "kubectl"),
		WebhookHost: env.WebhookInstallOptions.LocalServingHost, WebhookPort: env.WebhookInstallOptions.LocalServingPort,
		WebhookCertDir: env.WebhookInstallOptions.LocalServingCertDir}
	if e.Client, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		_ = env.Stop()
		return nil, err
	}
	admin, err := env.AddUser(envtest.User{Name: "novacron-test-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		_ = env.Stop()
		return nil, err
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		_ = env.Stop()
		return nil, err
	}
	f, err := os.CreateTemp("", "novacron-envtest-*.kubeconfig")
	if err != nil {
		_ = env.Stop()
		return nil, err
	}
	defer f.Close()
	if _, err := f.Write(kc); err != nil {
		_ = env.Stop()
		return nil, err
	}
	e.Kubeconfig = f.Name()
	return e, nil
}

// Stop stops the API server and etcd and removes the kubeconfig.
func (e *Env) Stop() error {
	_ = os.Remove(e.Kubeconfig)
	return e.env.Stop()
}

// Kubectl runs the built kubectl against the API server and returns its
// standard output, or an error carrying its standard error.
func (e *Env) Kubectl(ctx context.Context, args ...string) (string, error) {
	out, _, err := e.KubectlIO(ctx, "", args...)
	return out, err
}

// KubectlIO runs kubectl with stdin and returns its standard output and error
// (where kubectl prints warnings); a failure's error carries standard error.
func (e *Env) KubectlIO(ctx context.Context, stdin string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.KubectlPath, append([]string{"--kubeconfig", e.Kubeconfig}, args...)...)
	cmd.Dir = e.RepoRoot
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), stderr.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), stderr.String(), nil
}
