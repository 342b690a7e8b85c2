// Package devenv is `novacron dev`: the whole of NovaCron on one machine with
// no cluster. It runs a real etcd and kube-apiserver (the binaries `make
// envtest` builds), installs what manifests/ holds, runs the operator (with
// its webhooks) and novacron-scheduler in this process, and registers
// hypervisor nodes backed by libvirt's test driver or by real lab nodes.
//
// What it simulates, and only here (never in the operator or scheduler): there
// is no kubelet and no kube-controller-manager, so the registered Nodes are
// simply published Ready, and a launcher pod bound to a node is marked Running
// the way a kubelet running its pause container would (see kubelet.go).
package devenv

import (
	"context"
	"crypto/tls"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/novacron/operator/manifests"
	"github.com/novacron/operator/operator/manager"
	"github.com/novacron/operator/operator/provider/libvirt"
	"github.com/novacron/operator/scheduler/server"
)

// defaultProfile is the node profile used unless another is given; it
// documents the format.
//
//go:embed nodes.yaml
var defaultProfile []byte

// Config is how `novacron dev` was asked to run.
type Config struct {
	// AssetsDir holds kube-apiserver, etcd and kubectl.
	AssetsDir string
	// Nodes is how many hypervisor nodes to register (0: one of each kind).
	Nodes int
	// Profile is a node profile file's content (nil: devenv/nodes.yaml).
	Profile []byte
	// LabScript, when set, backs every node with a real libvirtd + QEMU lab node
	// started by this script (test/lab/lab.sh; root).
	LabScript string
	// MetricsAddr is where the operator serves /metrics ("0": off).
	MetricsAddr string
	// Image, when set, runs the operator and novacron-scheduler as the
	// shipped Deployments do, in podman from this image (`make
	// docker-build`), instead of in this process: their pod specs, RBAC,
	// webhook certificates and two replicas each. It needs LabScript: the
	// containers reach lab nodes over qemu+tls as an operator reaches real
	// ones.
	Image string
	// Out gets progress and the instructions; Log gets the components' logs.
	Out io.Writer
}

// Ready is what Run hands its caller once everything is up.
type Ready struct {
	Kubeconfig string
	Kubectl    string
	Nodes      []string
}

// OperatorNamespace is where the image catalog and webhook service live.
const OperatorNamespace = "novacron-system"

// Run starts the environment, calls ready once it is up, and tears all of it
// down when ctx ends: the components stop, the API server and etcd exit, lab
// nodes stop, and the working folder is removed.
func Run(ctx context.Context, cfg Config, ready func(Ready)) (err error) {
	start := time.Now()
	raw := cfg.Profile
	if raw == nil {
		raw = defaultProfile
	}
	profile, err := ParseProfile(raw)
	if err != nil {
		return err
	}
	nodes := profile.Expand(cfg.Nodes)
	if cfg.Image != "" && cfg.LabScript == "" {
		return errors.New("--image needs --lab: the shipped operator reaches hypervisors over qemu+tls, which the lab nodes serve")
	}
	for _, bin := range []string{"kube-apiserver", "etcd", "kubectl", "kube-controller-manager"} {
		if _, err := os.Stat(filepath.Join(cfg.AssetsDir, bin)); err != nil {
			return fmt.Errorf("%s not found in %s: run `make envtest` first (`make dev` does)", bin, cfg.AssetsDir)
		}
	}
	dir, err := os.MkdirTemp("", "novacron-dev-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p := &progress{out: cfg.Out}

	// The shipped components reach the API server and the lab nodes on the
	// lab bridge, so the lab nodes come first.
	var lab *labNodes
	var uris, migrationURIs map[string]string
	if cfg.LabScript != "" {
		lab = &labNodes{script: cfg.LabScript, tls: cfg.Image != ""}
		defer func() {
			p.step("stopping the lab nodes")
			lab.stop()
			p.done()
		}()
		p.step(fmt.Sprintf("starting %d real libvirtd + QEMU lab nodes", len(nodes)))
		if uris, migrationURIs, err = lab.start(ctx, nodes); err != nil {
			return err
		}
		p.done()
	}

	p.step("starting etcd and kube-apiserver")
	apiHost := ""
	if cfg.Image != "" {
		apiHost = labHostIP
	}
	env, err := apiServer(cfg.AssetsDir, dir, apiHost)
	if err != nil {
		fmt.Fprintln(cfg.Out, "failed")
		return err
	}
	defer func() {
		p.step("stopping etcd and kube-apiserver")
		if serr := env.Stop(); serr != nil && err == nil {
			err = serr
		}
		p.done()
	}()
	kubeconfig, c, err := admin(env, dir)
	if err != nil {
		return err
	}
	p.done()

	// Everything below runs until ctx ends; teardown waits for all of it.
	runCtx, stopAll := context.WithCancel(ctx)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	goRun := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(runCtx); err != nil && runCtx.Err() == nil {
				errs <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	// The components stop before anything they use (lab nodes, API server).
	stopComponents := sync.OnceFunc(func() {
		p.step("stopping the operator and novacron-scheduler")
		stopAll()
		wg.Wait()
		p.done()
	})
	defer stopComponents()

	p.step("starting kube-controller-manager (namespaces, garbage collection, node lifecycle)")
	goRun("kube-controller-manager", func(ctx context.Context) error {
		return controllerManager(ctx, env, cfg.AssetsDir, kubeconfig, dir)
	})
	p.done()

	if cfg.Image != "" {
		p.step(fmt.Sprintf("running the shipped operator and novacron-scheduler Deployments in podman (%s)", cfg.Image))
		kubelet, err := newKubelet(env.Config, nodes, controlPlaneNodes)
		if err != nil {
			return err
		}
		if err := startShipped(ctx, c, env, kubelet, cfg.Image, lab, dir); err != nil {
			return err
		}
		goRun("simulated kubelet and pod runner", kubelet.Start)
		if err := waitDeployments(ctx, c, 3*time.Minute); err != nil {
			return err
		}
		p.done()
	} else {
		p.step("starting the operator (controllers, webhooks) and novacron-scheduler")
		if err := startInProcess(ctx, cfg, env, kubeconfig, dir, goRun); err != nil {
			return err
		}
		kubelet, err := newKubelet(env.Config, nodes, nil)
		if err != nil {
			return err
		}
		goRun("simulated kubelet", kubelet.Start)
		hooks := env.WebhookInstallOptions
		if err := waitWebhook(ctx, hooks.LocalServingHost, hooks.LocalServingPort); err != nil {
			return err
		}
		p.done()
	}

	p.step("installing the built-in policies, image catalog and sample network")
	catalog, err := install(ctx, c, cfg.LabScript != "")
	if err != nil {
		return err
	}
	p.done()

	backing := "libvirt test driver"
	if cfg.LabScript != "" {
		backing = "real libvirtd + QEMU lab nodes"
	}
	p.step(fmt.Sprintf("registering %d hypervisor nodes (%s)", len(nodes), backing))
	if lab == nil {
		if uris, err = SimulatedNodes(filepath.Join(dir, "nodes"), nodes, catalog); err != nil {
			return err
		}
	}
	if err := Register(ctx, c, nodes, uris, lab != nil); err != nil {
		return err
	}
	if err := setMigrationURIs(ctx, c, migrationURIs); err != nil {
		return err
	}
	p.done()

	names := make([]string, len(nodes))
	for i, n := range nodes {
		names[i] = n.Name
	}
	fmt.Fprintf(cfg.Out, "novacron dev: ready in %s\n", time.Since(start).Round(100*time.Millisecond))
	ready(Ready{Kubeconfig: kubeconfig, Kubectl: filepath.Join(cfg.AssetsDir, "kubectl"), Nodes: names})

	select {
	case <-ctx.Done():
		return nil
	case err := <-errs:
		return err
	}
}

// startInProcess runs the operator (with its webhooks) and novacron-scheduler
// in this process, against env.
func startInProcess(ctx context.Context, cfg Config, env *envtest.Environment, kubeconfig, dir string, goRun func(string, func(context.Context) error)) error {
	// Simulated nodes are test-driver files; lab nodes are reached over
	// their own libvirtd socket and migrate over qemu+tcp (test/lab/lab.sh).
	connector := libvirt.NewConnector(libvirt.URIRules{Test: true, Local: cfg.LabScript != "", TCP: cfg.LabScript != ""})
	opts := manager.DefaultOptions()
	opts.Namespace = OperatorNamespace
	opts.MetricsAddr, opts.ProbeAddr, opts.LeaderElection = cfg.MetricsAddr, "0", false
	opts.StatsInterval = 5 * time.Second
	hooks := env.WebhookInstallOptions
	opts.Webhooks, opts.WebhookHost, opts.WebhookPort, opts.WebhookCertDir = true, hooks.LocalServingHost, hooks.LocalServingPort, hooks.LocalServingCertDir
	mgr, err := manager.New(env.Config, opts, connector)
	if err != nil {
		connector.Close()
		return err
	}
	goRun("operator", func(ctx context.Context) error {
		defer connector.Close()
		return mgr.Start(ctx)
	})
	schedRaw, err := manifests.FS.ReadFile("scheduler/config.yaml")
	if err != nil {
		return err
	}
	schedCfg, err := server.LocalConfig(schedRaw, kubeconfig)
	if err != nil {
		return err
	}
	schedFile := filepath.Join(dir, "scheduler.yaml")
	if err := os.WriteFile(schedFile, []byte(schedCfg), 0o600); err != nil {
		return err
	}
	goRun("novacron-scheduler", func(ctx context.Context) error { return server.Run(ctx, schedFile) })
	return nil
}

// scheme knows what devenv writes: Kubernetes' types, CRDs, NovaCron's.
func scheme() *runtime.Scheme {
	s := manager.Scheme()
	utilruntime.Must(apiextensionsv1.AddToScheme(s))
	return s
}

// apiServer starts etcd and kube-apiserver with NovaCron's CRDs (and Multus'
// NetworkAttachmentDefinition, which SR-IOV networks name) and its webhook
// configurations pointed at this process, with certificates envtest makes.
// Their files live in dir; a server that does not start is reported with what
// it said.
//
// With host set (--image), it serves there instead of on loopback, for the
// containers, installs no webhook configurations (the shipped ones come with
// the Deployments), and runs as a cluster's does: the ServiceAccount
// admission plugin gives pods their token volume, and webhook Services are
// reached at their endpoints (there is no kube-proxy).
func apiServer(assets, dir, host string) (*envtest.Environment, error) {
	var crds []*apiextensionsv1.CustomResourceDefinition
	var mutating []*admissionv1.MutatingWebhookConfiguration
	var validating []*admissionv1.ValidatingWebhookConfiguration
	objs, err := decodeAll(scheme(), "crd/bases/*.yaml", "dev/crds/*.yaml", "webhook/manifests.yaml")
	if err != nil {
		return nil, err
	}
	for _, o := range objs {
		switch o := o.(type) {
		case *apiextensionsv1.CustomResourceDefinition:
			crds = append(crds, o)
		case *admissionv1.MutatingWebhookConfiguration:
			mutating = append(mutating, o)
		case *admissionv1.ValidatingWebhookConfiguration:
			validating = append(validating, o)
		}
	}
	certs := filepath.Join(dir, "apiserver")
	if err := os.MkdirAll(certs, 0o700); err != nil {
		return nil, err
	}
	apiOut, etcdOut := &tail{}, &tail{}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		Scheme:                scheme(),
		CRDInstallOptions:     envtest.CRDInstallOptions{CRDs: crds},
		WebhookInstallOptions: envtest.WebhookInstallOptions{MutatingWebhooks: mutating, ValidatingWebhooks: validating},
		ControlPlane: envtest.ControlPlane{
			// In dir, so that every try envtest makes uses one folder, which
			// goes with dir however the start ends.
			// The binaries by path: envtest would prefer $KUBEBUILDER_ASSETS
			// to the folder it is given.
			APIServer: &envtest.APIServer{Path: filepath.Join(assets, "kube-apiserver"), CertDir: certs, Out: apiOut, Err: apiOut},
			Etcd:      &envtest.Etcd{Path: filepath.Join(assets, "etcd"), Out: etcdOut, Err: etcdOut},
		},
	}
	if host != "" {
		env.WebhookInstallOptions = envtest.WebhookInstallOptions{}
		api := env.ControlPlane.APIServer
		// Both or neither: envtest picks a loopback address for a half-set one.
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, fmt.Errorf("an API server port on %s: %w", host, err)
		}
		api.SecureServing.Address, api.SecureServing.Port = host, strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
		_ = l.Close()
		api.Configure().
			Set("advertise-address", host).
			Set("enable-aggregator-routing", "true").
			Disable("disable-admission-plugins")
	}
	if _, err := env.Start(); err != nil {
		_ = env.Stop()
		return nil, fmt.Errorf("starting etcd and kube-apiserver from %s: %w\n%s", assets, err, said(err, apiOut, etcdOut))
	}
	return env, nil
}

// said is what the server that did not start said last: kube-apiserver's
// words, or etcd's when it is etcd that failed (when kube-apiserver fails,
// etcd only says it was stopped).
func said(err error, apiServer, etcd *tail) string {
	name, out := "kube-apiserver", apiServer.String()
	if strings.Contains(err.Error(), "etcd") || out == "" {
		name, out = "etcd", etcd.String()
	}
	if out == "" {
		return "neither kube-apiserver nor etcd said anything"
	}
	return name + " said (last lines):\n" + out
}

// tail keeps the last lines a process writes.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

const tailBytes = 4 << 10

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - tailBytes; over > 0 {
		t.buf = t.buf[over:]
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := strings.Split(strings.TrimSpace(string(t.buf)), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}

// admin writes an administrator's kubeconfig into dir.
func admin(env *envtest.Environment, dir string) (string, client.Client, error) {
	user, err := env.AddUser(envtest.User{Name: "novacron-dev-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return "", nil, err
	}
	kc, err := user.KubeConfig()
	if err != nil {
		return "", nil, err
	}
	path := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		return "", nil, err
	}
	c, err := client.New(env.Config, client.Options{Scheme: scheme()})
	return path, c, err
}

// waitWebhook waits until the operator's webhook server answers TLS, so the
// objects installed next are defaulted and validated as in a cluster.
func waitWebhook(ctx context.Context, host string, port int) error {
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	deadline := time.Now().Add(30 * time.Second)
	for {
		d := &tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // a liveness probe, not a trust decision
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			return conn.Close()
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the operator's webhook server at %s did not answer: %w", addr, errors.Join(err, ctx.Err()))
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// progress prints "step ... done (1.2s)" lines.
type progress struct {
	out   io.Writer
	since time.Time
}

func (p *progress) step(what string) {
	p.since = time.Now()
	fmt.Fprintf(p.out, "novacron dev: %s ... ", what)
}

func (p *progress) done() {
	fmt.Fprintf(p.out, "done (%s)\n", time.Since(p.since).Round(100*time.Millisecond))
}

// decodeAll reads the embedded manifests matching the patterns into typed
// objects where the scheme knows the kind, unstructured otherwise.
func decodeAll(s *runtime.Scheme, patterns ...string) ([]client.Object, error) {
	var out []client.Object
	for _, pattern := range patterns {
		files, err := fsGlob(pattern)
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			raw, err := manifests.FS.ReadFile(f)
			if err != nil {
				return nil, err
			}
			objs, err := decodeYAML(s, raw)
			if err != nil {
				return nil, fmt.Errorf("manifests/%s: %w", f, err)
			}
			out = append(out, objs...)
		}
	}
	return out, nil
}

func fsGlob(pattern string) ([]string, error) {
	files, err := fsGlobRaw(pattern)
	if err == nil && len(files) == 0 {
		err = fmt.Errorf("no embedded manifests match %s", pattern)
	}
	return files, err
}
