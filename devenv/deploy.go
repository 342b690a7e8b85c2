package devenv

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// ShippedImage is the image the shipped Deployments name; --image replaces it.
const ShippedImage = "novacron/operator:latest"

// shippedManifests are what `make deploy` applies before the catalog and
// policies (which install() creates): the operator's and the scheduler's
// RBAC, Deployments, Services and configuration, the webhook configurations
// and the cert-manager resources of their certificate.
var shippedManifests = []string{
	"operator/namespace.yaml", "rbac/role.yaml", "rbac/tenant-roles.yaml",
	"operator/rbac.yaml", "operator/metrics.yaml", "operator/pdb.yaml", "operator/deployment.yaml",
	"scheduler/rbac.yaml", "scheduler/config.yaml", "scheduler/deployment.yaml",
	"webhook/certificate.yaml", "webhook/manifests.yaml",
}

// LibvirtClientSecret is the Secret the operator Deployment mounts as its
// libvirt TLS client identity.
const LibvirtClientSecret = "novacron-libvirt-client-tls"

// deployShipped installs the shipped manifests as a platform team would,
// with the Deployments' image replaced by image, cert-manager's part played
// by issuer (certs.go), and the libvirt client identity from pkiDir (files
// cacert.pem, clientcert.pem, clientkey.pem) as the Secret the operator
// mounts.
func deployShipped(ctx context.Context, c client.Client, image, pkiDir string) error {
	objs, err := decodeAll(scheme(), shippedManifests...)
	if err != nil {
		return err
	}
	certs := newIssuer(objs)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: OperatorNamespace}}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	if err := certs.issueAll(ctx, c); err != nil {
		return fmt.Errorf("manifests/webhook/certificate.yaml: %w", err)
	}
	tls := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: LibvirtClientSecret, Namespace: OperatorNamespace}, Data: map[string][]byte{}}
	for _, f := range []string{"cacert.pem", "clientcert.pem", "clientkey.pem"} {
		if tls.Data[f], err = os.ReadFile(filepath.Join(pkiDir, f)); err != nil {
			return fmt.Errorf("the libvirt client identity: %w", err)
		}
	}
	if err := c.Create(ctx, tls); err != nil {
		return err
	}
	for _, o := range objs {
		if _, ok := o.(*unstructured.Unstructured); ok && o.GetObjectKind().GroupVersionKind().Group == "cert-manager.io" {
			continue // played by certs
		}
		if _, ok := o.(*corev1.Namespace); ok {
			continue
		}
		if err := inject(o, certs, image); err != nil {
			return err
		}
		if err := c.Create(ctx, o); err != nil {
			return fmt.Errorf("creating %s %s: %w", o.GetObjectKind().GroupVersionKind().Kind, o.GetName(), err)
		}
	}
	return nil
}

// inject does to an object what the cluster's tools would before it is
// applied: cert-manager's CA injection, `make deploy`'s image replacement.
func inject(o client.Object, certs *issuer, image string) error {
	bundle, err := certs.caBundle(o)
	if err != nil {
		return err
	}
	switch o := o.(type) {
	case *admissionv1.MutatingWebhookConfiguration:
		for i := range o.Webhooks {
			o.Webhooks[i].ClientConfig.CABundle = bundle
		}
	case *admissionv1.ValidatingWebhookConfiguration:
		for i := range o.Webhooks {
			o.Webhooks[i].ClientConfig.CABundle = bundle
		}
	case *appsv1.Deployment:
		for i := range o.Spec.Template.Spec.Containers {
			if o.Spec.Template.Spec.Containers[i].Image == ShippedImage {
				o.Spec.Template.Spec.Containers[i].Image = image
			}
		}
	}
	return nil
}

// waitDeployments waits until every Deployment in the operator's namespace
// has all its replicas ready and up to date, saying which is not when it
// gives up.
func waitDeployments(ctx context.Context, c client.Client, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var list appsv1.DeploymentList
		if err := c.List(ctx, &list, client.InNamespace(OperatorNamespace)); err != nil {
			return err
		}
		var notReady []string
		for _, d := range list.Items {
			want := int32(1)
			if d.Spec.Replicas != nil {
				want = *d.Spec.Replicas
			}
			if d.Status.ObservedGeneration < d.Generation || d.Status.UpdatedReplicas < want || d.Status.ReadyReplicas < want || d.Status.Replicas != want {
				notReady = append(notReady, fmt.Sprintf("%s (%d/%d ready)", d.Name, d.Status.ReadyReplicas, want))
			}
		}
		if len(list.Items) > 0 && len(notReady) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("Deployments not ready after %s: %v%s", timeout, notReady, podProblems(ctx, c))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// podProblems names the operator namespace's pods that are not ready and
// what their containers wait for.
func podProblems(ctx context.Context, c client.Client) string {
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(OperatorNamespace)); err != nil {
		return ""
	}
	out := ""
	for _, p := range pods.Items {
		for _, s := range p.Status.ContainerStatuses {
			if s.Ready {
				continue
			}
			out += fmt.Sprintf("\n  pod %s container %s: not ready (restarts %d)", p.Name, s.Name, s.RestartCount)
			if s.State.Waiting != nil {
				out += ": " + s.State.Waiting.Message
			}
		}
	}
	return out
}

// controlPlaneNodes are the Nodes the shipped Deployments' pods are bound to
// with --image: two, so that the replicas' anti-affinity can be honoured.
var controlPlaneNodes = []string{"novacron-dev-control-plane-1", "novacron-dev-control-plane-2"}

// startShipped installs the shipped Deployments and adds to kubelet the pod
// runner that runs their pods in podman from image.
func startShipped(ctx context.Context, c client.Client, env *envtest.Environment, kubelet ctrl.Manager, image string, lab *labNodes, dir string) error {
	if os.Getenv("CONTAINERS_CONF") == "" {
		// Run from the repository, as `make dev` does.
		conf, err := filepath.Abs("hack/containers.conf")
		if err != nil {
			return err
		}
		if _, err := os.Stat(conf); err != nil {
			return fmt.Errorf("--image: podman's settings for this machine: %w (run from the repository, or set CONTAINERS_CONF)", err)
		}
		os.Setenv("CONTAINERS_CONF", conf)
	}
	if _, err := podman(ctx, "image", "exists", image); err != nil {
		return fmt.Errorf("--image %s: not in podman's store; build it with `make docker-build CONTAINER_TOOL=podman IMG=%s`", image, image)
	}
	removeLeftovers(ctx)
	for _, n := range controlPlaneNodes {
		if _, err := registerNode(ctx, c, n, map[string]string{"kubernetes.io/hostname": n, "kubernetes.io/os": "linux", "node-role.kubernetes.io/control-plane": ""}, nil); err != nil {
			return err
		}
	}
	pki, err := lab.run(ctx, "pki")
	if err != nil {
		return err
	}
	if err := deployShipped(ctx, c, image, pki); err != nil {
		return err
	}
	u, err := url.Parse(env.Config.Host)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		return err
	}
	runner := &podRunner{Client: kubelet.GetClient(), cs: cs, namespace: OperatorNamespace, dir: filepath.Join(dir, "kubelet"),
		apiHost: u.Hostname(), apiPort: u.Port(), nodes: controlPlaneNodes}
	return runner.setup(kubelet)
}
