package devenv

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
)

// podRunner plays the kubelet (and the default scheduler's binding) for the
// pods of the shipped Deployments that `novacron dev --image` installs: each
// pod runs in podman as its spec says. What a platform team's cluster would do
// and this does too: the container's command, args and env; its user, group,
// read-only root and capabilities; every volume with its mode and owner
// (fsGroup on Secrets and emptyDirs, defaultMode), the service account token
// from the TokenRequest API at the standard path; the pod's own network (so
// two replicas do not collide on their ports), its IP and readiness in its
// status (so EndpointSlices, and with them the webhook Service, exist);
// readiness and liveness probes; restarts of containers that exit.
//
// What it leaves out, as nothing shipped relies on it: resource limits (this
// machine's hybrid cgroups refuse them), service links other than the API
// server's, init containers, token refresh (dev runs for less than a token's
// hour), image pulls (the image is built here).
type podRunner struct {
	client.Client
	cs        kubernetes.Interface
	namespace string
	image     string
	dir       string
	apiHost   string
	apiPort   string
	// nodes are the control-plane Nodes pods are bound to.
	nodes []string

	mu       sync.Mutex
	pods     map[types.NamespacedName]*runningPod
	inflight sync.WaitGroup
}

// runningPod is what the runner knows of a pod it started.
type runningPod struct {
	uid     types.UID
	network string
	ip      string
	started time.Time
	// Per container: when it last (re)started, its restarts, its
	// consecutive failed liveness probes, when it was last probed, whether
	// its readiness probe passed.
	since    map[string]time.Time
	restarts map[string]int32
	failures map[string]int
	probed   map[string]time.Time
	ready    map[string]bool
}

// podmanLabel marks what the runner creates, so a later run can remove what
// a killed one left.
const podmanLabel = "io.novacron.dev"

// podman runs podman; CONTAINERS_CONF (set by startShipped) points it at
// this machine's settings (hack/containers.conf).
func podman(ctx context.Context, args ...string) (string, error) {
	return command(ctx, "podman", args...)
}

// removeLeftovers removes the containers and networks of an earlier run that
// did not end cleanly.
func removeLeftovers(ctx context.Context) {
	if ids, err := podman(ctx, "ps", "-aq", "--filter", "label="+podmanLabel); err == nil && ids != "" {
		_, _ = podman(ctx, append([]string{"rm", "-f", "-t", "0"}, strings.Fields(ids)...)...)
	}
	if nets, err := podman(ctx, "network", "ls", "-q", "--filter", "label="+podmanLabel); err == nil && nets != "" {
		_, _ = podman(ctx, append([]string{"network", "rm", "-f"}, strings.Fields(nets)...)...)
	}
}

func (r *podRunner) setup(mgr ctrl.Manager) error {
	r.pods = map[types.NamespacedName]*runningPod{}
	ours := predicate.NewPredicateFuncs(func(o client.Object) bool {
		if o.GetNamespace() != r.namespace {
			return false
		}
		ref := metav1.GetControllerOf(o)
		return ref != nil && ref.Kind == "ReplicaSet"
	})
	if err := mgr.Add(r.stopAllOnExit()); err != nil {
		return err
	}
	// Several at once: stopping a pod waits out its grace period.
	return ctrl.NewControllerManagedBy(mgr).Named("dev-pod-runner").
		For(&corev1.Pod{}, builder.WithPredicates(ours)).
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Complete(r)
}

// probeEvery is how often a running pod is looked at: its containers'
// state and its probes.
const probeEvery = time.Second

func (r *podRunner) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	// stopAllOnExit waits for a container being started to be recorded.
	r.inflight.Add(1)
	defer r.inflight.Done()
	var pod corev1.Pod
	err := r.Get(ctx, req.NamespacedName, &pod)
	if apierrors.IsNotFound(err) {
		r.remove(ctx, req.NamespacedName, 0)
		return ctrl.Result{}, nil
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	if pod.DeletionTimestamp != nil {
		grace := int64(30)
		if pod.DeletionGracePeriodSeconds != nil {
			grace = *pod.DeletionGracePeriodSeconds
		}
		r.remove(ctx, req.NamespacedName, grace)
		return ctrl.Result{}, client.IgnoreNotFound(r.Delete(ctx, &pod, client.GracePeriodSeconds(0)))
	}
	if pod.Spec.NodeName == "" {
		return ctrl.Result{}, r.bind(ctx, &pod)
	}
	r.mu.Lock()
	rp := r.pods[req.NamespacedName]
	r.mu.Unlock()
	if rp != nil && rp.uid != pod.UID {
		r.remove(ctx, req.NamespacedName, 0)
		rp = nil
	}
	if rp == nil {
		if err := unsupported(&pod); err != nil {
			return ctrl.Result{}, r.waiting(ctx, &pod, err)
		}
		if rp, err = r.start(ctx, &pod); err != nil {
			// Reported in the pod's status; tried again as a kubelet would.
			return ctrl.Result{RequeueAfter: 2 * time.Second}, r.waiting(ctx, &pod, err)
		}
	}
	if err := r.observe(ctx, &pod, rp); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: probeEvery}, nil
}

// bind places the pod as the default scheduler would with the shipped
// anti-affinity: on the control-plane node with the fewest of its replicas.
func (r *podRunner) bind(ctx context.Context, pod *corev1.Pod) error {
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(pod.Namespace), client.MatchingLabels(pod.Labels)); err != nil {
		return err
	}
	count := map[string]int{}
	for _, p := range pods.Items {
		count[p.Spec.NodeName]++
	}
	best := r.nodes[0]
	for _, n := range r.nodes {
		if count[n] < count[best] {
			best = n
		}
	}
	return r.cs.CoreV1().Pods(pod.Namespace).Bind(ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: best},
	}, metav1.CreateOptions{})
}

func containerName(pod *corev1.Pod, c string) string { return "ncdev-" + pod.Name + "-" + c }

// start makes the pod's network and volumes and starts its containers.
func (r *podRunner) start(ctx context.Context, pod *corev1.Pod) (*runningPod, error) {
	sum := sha256.Sum256([]byte(pod.UID))
	rp := &runningPod{uid: pod.UID, network: "ncdev-" + hex.EncodeToString(sum[:5]), started: time.Now(),
		since: map[string]time.Time{}, restarts: map[string]int32{}, failures: map[string]int{}, probed: map[string]time.Time{}, ready: map[string]bool{}}
	_, _ = podman(ctx, "network", "rm", "-f", rp.network)
	if _, err := podman(ctx, "network", "create", "--label", podmanLabel+"=1", rp.network); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			r.stopPod(ctx, rp, 0)
		}
	}()
	subnet, err := podman(ctx, "network", "inspect", "--format", "{{range .Subnets}}{{.Subnet}}{{end}}", rp.network)
	if err != nil {
		return nil, err
	}
	_, cidr, err := net.ParseCIDR(subnet)
	if err != nil {
		return nil, fmt.Errorf("network %s: subnet %q: %w", rp.network, subnet, err)
	}
	ip := cidr.IP.To4()
	rp.ip = net.IPv4(ip[0], ip[1], ip[2], ip[3]+2).String()

	volumes, err := r.volumes(ctx, pod)
	if err != nil {
		return nil, err
	}
	for _, c := range pod.Spec.Containers {
		if err := r.run(ctx, pod, &c, rp, volumes); err != nil {
			return nil, err
		}
		rp.since[c.Name] = time.Now()
	}
	ok = true
	r.mu.Lock()
	r.pods[client.ObjectKeyFromObject(pod)] = rp
	r.mu.Unlock()
	return rp, nil
}

// run starts one container with podman as the kubelet would with a
// container runtime.
func (r *podRunner) run(ctx context.Context, pod *corev1.Pod, c *corev1.Container, rp *runningPod, volumes map[string]volume) error {
	psc := pod.Spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	sc := c.SecurityContext
	if sc == nil {
		sc = &corev1.SecurityContext{}
	}
	image := c.Image
	user, err := runAs(ctx, image, c.Name, psc, sc)
	if err != nil {
		return err
	}
	args := []string{"run", "-d", "--name", containerName(pod, c.Name), "--label", podmanLabel + "=1",
		"--label", podmanLabel + ".pod=" + string(pod.UID),
		"--network", rp.network, "--ip", rp.ip, "--hostname", pod.Name, "--user", user,
		// Kubernetes mounts no tmpfs of its own over a read-only root.
		"--read-only-tmpfs=false"}
	if psc.FSGroup != nil {
		args = append(args, "--group-add", strconv.FormatInt(*psc.FSGroup, 10))
	}
	for _, g := range psc.SupplementalGroups {
		args = append(args, "--group-add", strconv.FormatInt(g, 10))
	}
	if ptr.Deref(sc.ReadOnlyRootFilesystem, false) {
		args = append(args, "--read-only")
	}
	if sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
		args = append(args, "--security-opt", "no-new-privileges")
	}
	if ptr.Deref(sc.Privileged, false) {
		args = append(args, "--privileged")
	}
	if sc.Capabilities != nil {
		for _, cp := range sc.Capabilities.Drop {
			args = append(args, "--cap-drop", string(cp))
		}
		for _, cp := range sc.Capabilities.Add {
			args = append(args, "--cap-add", string(cp))
		}
	}
	env, err := r.env(ctx, pod, c, rp)
	if err != nil {
		return err
	}
	for _, e := range env {
		args = append(args, "--env", e)
	}
	for _, m := range c.VolumeMounts {
		v, ok := volumes[m.Name]
		if !ok {
			return fmt.Errorf("container %s: volumeMount %s names no volume", c.Name, m.Name)
		}
		src := filepath.Join(v.path, m.SubPath)
		opt := "rw"
		if m.ReadOnly || v.readOnly {
			opt = "ro"
		}
		args = append(args, "--volume", src+":"+m.MountPath+":"+opt)
	}
	if len(c.Command) > 0 {
		ep, _ := json.Marshal(c.Command[:1])
		args = append(args, "--entrypoint", string(ep), image)
		args = append(args, c.Command[1:]...)
	} else {
		args = append(args, image)
	}
	args = append(args, c.Args...)
	_, _ = podman(ctx, "rm", "-f", "-t", "0", containerName(pod, c.Name))
	_, err = podman(ctx, args...)
	return err
}

// runAs is the user:group a container runs as, as the kubelet and the
// container runtime decide it: the image's USER, each part replaced by
// runAsUser / runAsGroup where the spec sets them (container over pod); and
// with runAsNonRoot, a refusal to start as root or as a user it cannot check.
func runAs(ctx context.Context, image, container string, psc *corev1.PodSecurityContext, sc *corev1.SecurityContext) (string, error) {
	imageUser, err := podman(ctx, "image", "inspect", "--format", "{{.Config.User}}", image)
	if err != nil {
		return "", err
	}
	u, g, _ := strings.Cut(imageUser, ":")
	if u == "" {
		u = "0"
	}
	if id := ptr.Deref(sc.RunAsUser, ptr.Deref(psc.RunAsUser, -1)); id >= 0 {
		u = strconv.FormatInt(id, 10)
	}
	if id := ptr.Deref(sc.RunAsGroup, ptr.Deref(psc.RunAsGroup, -1)); id >= 0 {
		g = strconv.FormatInt(id, 10)
	}
	if ptr.Deref(sc.RunAsNonRoot, ptr.Deref(psc.RunAsNonRoot, false)) {
		uid, err := strconv.ParseInt(u, 10, 64)
		if err != nil {
			return "", fmt.Errorf("container %s: runAsNonRoot, and image %s has non-numeric user %q, which cannot be checked", container, image, u)
		}
		if uid == 0 {
			return "", fmt.Errorf("container %s: runAsNonRoot, and the image runs as root", container)
		}
	}
	if g == "" {
		return u, nil
	}
	return u + ":" + g, nil
}

// unsupported names what a pod asks for that this runner does not do, so
// that such a pod fails instead of running otherwise than its spec says.
func unsupported(pod *corev1.Pod) error {
	var what []string
	if len(pod.Spec.InitContainers) > 0 {
		what = append(what, "initContainers")
	}
	if pod.Spec.HostNetwork || pod.Spec.HostPID || pod.Spec.HostIPC {
		what = append(what, "host namespaces")
	}
	for _, c := range pod.Spec.Containers {
		if len(c.EnvFrom) > 0 {
			what = append(what, c.Name+": envFrom")
		}
		if c.WorkingDir != "" {
			what = append(what, c.Name+": workingDir")
		}
		if c.Lifecycle != nil {
			what = append(what, c.Name+": lifecycle")
		}
		if c.StartupProbe != nil {
			what = append(what, c.Name+": startupProbe")
		}
		for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe} {
			if p != nil && p.HTTPGet == nil {
				what = append(what, c.Name+": probes other than httpGet")
			}
		}
		for _, m := range c.VolumeMounts {
			if m.SubPathExpr != "" {
				what = append(what, c.Name+": subPathExpr")
			}
		}
		if sc := c.SecurityContext; sc != nil && sc.SeccompProfile != nil && sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			what = append(what, c.Name+": a seccomp profile other than RuntimeDefault")
		}
	}
	if sc := pod.Spec.SecurityContext; sc != nil && sc.SeccompProfile != nil && sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		what = append(what, "a seccomp profile other than RuntimeDefault")
	}
	for _, v := range pod.Spec.Volumes {
		if v.EmptyDir != nil && v.EmptyDir.Medium != "" {
			what = append(what, "volume "+v.Name+": emptyDir medium "+string(v.EmptyDir.Medium))
		}
	}
	if len(what) > 0 {
		return fmt.Errorf("not served by novacron dev's pod runner: %s", strings.Join(what, ", "))
	}
	return nil
}

// env is the container's environment as the kubelet makes it: the API
// server's service variables, then the container's own.
func (r *podRunner) env(ctx context.Context, pod *corev1.Pod, c *corev1.Container, rp *runningPod) ([]string, error) {
	out := []string{
		"KUBERNETES_SERVICE_HOST=" + r.apiHost, "KUBERNETES_SERVICE_PORT=" + r.apiPort, "KUBERNETES_SERVICE_PORT_HTTPS=" + r.apiPort,
		"KUBERNETES_PORT=tcp://" + net.JoinHostPort(r.apiHost, r.apiPort),
	}
	fields := map[string]string{
		"metadata.name": pod.Name, "metadata.namespace": pod.Namespace, "metadata.uid": string(pod.UID),
		"spec.nodeName": pod.Spec.NodeName, "spec.serviceAccountName": pod.Spec.ServiceAccountName,
		"status.podIP": rp.ip, "status.hostIP": r.apiHost,
	}
	for _, e := range c.Env {
		value := e.Value
		switch {
		case e.ValueFrom == nil:
		case e.ValueFrom.FieldRef != nil:
			v, ok := fields[e.ValueFrom.FieldRef.FieldPath]
			if !ok {
				return nil, fmt.Errorf("container %s: env %s: fieldRef %s is not served by novacron dev", c.Name, e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
			value = v
		case e.ValueFrom.SecretKeyRef != nil:
			var s corev1.Secret
			if err := r.Get(ctx, client.ObjectKey{Namespace: pod.Namespace, Name: e.ValueFrom.SecretKeyRef.Name}, &s); err != nil {
				return nil, fmt.Errorf("container %s: env %s: %w", c.Name, e.Name, err)
			}
			v, ok := s.Data[e.ValueFrom.SecretKeyRef.Key]
			if !ok && !ptr.Deref(e.ValueFrom.SecretKeyRef.Optional, false) {
				return nil, fmt.Errorf("container %s: env %s: secret %s has no key %s", c.Name, e.Name, s.Name, e.ValueFrom.SecretKeyRef.Key)
			}
			value = string(v)
		case e.ValueFrom.ConfigMapKeyRef != nil:
			var cm corev1.ConfigMap
			if err := r.Get(ctx, client.ObjectKey{Namespace: pod.Namespace, Name: e.ValueFrom.ConfigMapKeyRef.Name}, &cm); err != nil {
				return nil, fmt.Errorf("container %s: env %s: %w", c.Name, e.Name, err)
			}
			v, ok := cm.Data[e.ValueFrom.ConfigMapKeyRef.Key]
			if !ok && !ptr.Deref(e.ValueFrom.ConfigMapKeyRef.Optional, false) {
				return nil, fmt.Errorf("container %s: env %s: configmap %s has no key %s", c.Name, e.Name, cm.Name, e.ValueFrom.ConfigMapKeyRef.Key)
			}
			value = v
		default:
			return nil, fmt.Errorf("container %s: env %s: this valueFrom is not served by novacron dev", c.Name, e.Name)
		}
		out = append(out, e.Name+"="+value)
	}
	return out, nil
}

// volume is a pod volume made on this machine.
type volume struct {
	path     string
	readOnly bool
}

// volumes makes the pod's volumes under the runner's folder, with the
// modes and owners the kubelet gives them: files of Secrets, ConfigMaps and
// projected volumes root-owned with their mode (defaultMode or the item's),
// and with an fsGroup, that group and group read added; emptyDirs 0777, with
// an fsGroup its group and the setgid bit.
func (r *podRunner) volumes(ctx context.Context, pod *corev1.Pod) (map[string]volume, error) {
	root := filepath.Join(r.dir, "pods", string(pod.UID))
	if err := os.RemoveAll(root); err != nil {
		return nil, err
	}
	var fsGroup *int64
	if pod.Spec.SecurityContext != nil {
		fsGroup = pod.Spec.SecurityContext.FSGroup
	}
	out := map[string]volume{}
	for _, v := range pod.Spec.Volumes {
		dir := filepath.Join(root, v.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		files := map[string]file{}
		var err error
		switch {
		case v.EmptyDir != nil:
			if err := os.Chmod(dir, 0o777); err != nil {
				return nil, err
			}
			if fsGroup != nil {
				if err := os.Chown(dir, 0, int(*fsGroup)); err != nil {
					return nil, err
				}
				if err := os.Chmod(dir, 0o777|os.ModeSetgid); err != nil {
					return nil, err
				}
			}
			out[v.Name] = volume{path: dir}
			continue
		case v.Secret != nil:
			err = r.sourceFiles(ctx, &corev1.Secret{}, pod.Namespace, v.Secret.SecretName, v.Secret.Items, ptr.Deref(v.Secret.Optional, false), mode(v.Secret.DefaultMode), files)
		case v.ConfigMap != nil:
			err = r.sourceFiles(ctx, &corev1.ConfigMap{}, pod.Namespace, v.ConfigMap.Name, v.ConfigMap.Items, ptr.Deref(v.ConfigMap.Optional, false), mode(v.ConfigMap.DefaultMode), files)
		case v.Projected != nil:
			err = r.projectedFiles(ctx, pod, v.Projected, files)
		case v.HostPath != nil:
			out[v.Name] = volume{path: v.HostPath.Path}
			continue
		default:
			return nil, fmt.Errorf("volume %s: its type is not served by novacron dev", v.Name)
		}
		if err != nil {
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		for name, f := range files {
			if err := writeVolumeFile(dir, name, f, fsGroup); err != nil {
				return nil, fmt.Errorf("volume %s: %w", v.Name, err)
			}
		}
		out[v.Name] = volume{path: dir, readOnly: true}
	}
	return out, nil
}

type file struct {
	data []byte
	mode os.FileMode
}

func mode(m *int32) os.FileMode {
	if m == nil {
		return 0o644 // the API's default for Secret, ConfigMap and projected volumes
	}
	return os.FileMode(*m)
}

func writeVolumeFile(dir, name string, f file, fsGroup *int64) error {
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	m := f.mode
	gid := 0
	if fsGroup != nil {
		// As the kubelet's volume ownership: the fsGroup's group, readable by it.
		m |= 0o440
		gid = int(*fsGroup)
	}
	if err := os.WriteFile(path, f.data, 0o600); err != nil {
		return err
	}
	if err := os.Chown(path, 0, gid); err != nil {
		return err
	}
	return os.Chmod(path, m)
}

// pick adds a source's keys (or the items asked for) as files.
func pick(data map[string][]byte, items []corev1.KeyToPath, m os.FileMode, files map[string]file) error {
	if len(items) == 0 {
		for k, v := range data {
			files[k] = file{v, m}
		}
		return nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			return fmt.Errorf("key %s not found", it.Key)
		}
		fm := m
		if it.Mode != nil {
			fm = os.FileMode(*it.Mode)
		}
		files[it.Path] = file{v, fm}
	}
	return nil
}

// sourceFiles adds the files of a Secret or a ConfigMap (obj, empty, says
// which); a missing optional one adds none.
func (r *podRunner) sourceFiles(ctx context.Context, obj client.Object, ns, name string, items []corev1.KeyToPath, optional bool, m os.FileMode, files map[string]file) error {
	err := r.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, obj)
	if apierrors.IsNotFound(err) && optional {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%T %s: %w", obj, name, err)
	}
	data := map[string][]byte{}
	switch o := obj.(type) {
	case *corev1.Secret:
		data = o.Data
	case *corev1.ConfigMap:
		for k, v := range o.Data {
			data[k] = []byte(v)
		}
		for k, v := range o.BinaryData {
			data[k] = v
		}
	}
	return pick(data, items, m, files)
}

// projectedFiles serves the projected volume the ServiceAccount admission
// plugin adds to every pod (token, ca.crt, namespace) and the like.
func (r *podRunner) projectedFiles(ctx context.Context, pod *corev1.Pod, p *corev1.ProjectedVolumeSource, files map[string]file) error {
	m := mode(p.DefaultMode)
	for _, src := range p.Sources {
		switch {
		case src.ServiceAccountToken != nil:
			t := src.ServiceAccountToken
			req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
				ExpirationSeconds: ptr.To(ptr.Deref(t.ExpirationSeconds, 3600)),
				BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
			}}
			if t.Audience != "" {
				req.Spec.Audiences = []string{t.Audience}
			}
			tok, err := r.cs.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, pod.Spec.ServiceAccountName, req, metav1.CreateOptions{})
			if err != nil {
				return fmt.Errorf("token for service account %s: %w", pod.Spec.ServiceAccountName, err)
			}
			files[t.Path] = file{[]byte(tok.Status.Token), m}
		case src.ConfigMap != nil:
			if err := r.sourceFiles(ctx, &corev1.ConfigMap{}, pod.Namespace, src.ConfigMap.Name, src.ConfigMap.Items, ptr.Deref(src.ConfigMap.Optional, false), m, files); err != nil {
				return err
			}
		case src.Secret != nil:
			if err := r.sourceFiles(ctx, &corev1.Secret{}, pod.Namespace, src.Secret.Name, src.Secret.Items, ptr.Deref(src.Secret.Optional, false), m, files); err != nil {
				return err
			}
		case src.DownwardAPI != nil:
			for _, it := range src.DownwardAPI.Items {
				if it.FieldRef == nil || it.FieldRef.FieldPath != "metadata.namespace" {
					return fmt.Errorf("downwardAPI %s: only metadata.namespace is served by novacron dev", it.Path)
				}
				files[it.Path] = file{[]byte(pod.Namespace), m}
			}
		default:
			return fmt.Errorf("a projected source not served by novacron dev")
		}
	}
	return nil
}

// observe restarts exited containers, runs the probes and reports the pod's
// state in its status.
func (r *podRunner) observe(ctx context.Context, pod *corev1.Pod, rp *runningPod) error {
	now := metav1.Now()
	statuses := []corev1.ContainerStatus{}
	allReady := true
	for _, c := range pod.Spec.Containers {
		name := containerName(pod, c.Name)
		state, err := podman(ctx, "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}} {{.Id}}", name)
		if err != nil {
			return err
		}
		fields := strings.Fields(state)
		running := len(fields) == 3 && fields[0] == "running"
		up := time.Since(rp.since[c.Name])
		if lp := c.LivenessProbe; running && lp != nil && up > seconds(lp.InitialDelaySeconds, 0) && time.Since(rp.probed[c.Name]) >= seconds(lp.PeriodSeconds, 10) {
			rp.probed[c.Name] = time.Now()
			if probe(ctx, lp, &c, rp.ip) {
				rp.failures[c.Name] = 0
			} else if rp.failures[c.Name]++; rp.failures[c.Name] >= int(threshold(lp.FailureThreshold)) {
				running = false
			}
		}
		if !running {
			// restartPolicy Always, as every Deployment's pods have.
			rp.restarts[c.Name]++
			rp.failures[c.Name], rp.ready[c.Name], rp.since[c.Name] = 0, false, time.Now()
			if _, err := podman(ctx, "restart", "-t", "0", name); err != nil {
				return err
			}
		} else {
			rp.ready[c.Name] = c.ReadinessProbe == nil || (up > seconds(c.ReadinessProbe.InitialDelaySeconds, 0) && probe(ctx, c.ReadinessProbe, &c, rp.ip))
		}
		allReady = allReady && rp.ready[c.Name]
		id := ""
		if len(fields) == 3 {
			id = "podman://" + fields[2]
		}
		statuses = append(statuses, corev1.ContainerStatus{Name: c.Name, Image: c.Image, ImageID: c.Image, ContainerID: id,
			Ready: rp.ready[c.Name], Started: ptr.To(running), RestartCount: rp.restarts[c.Name],
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(rp.started)}}})
	}
	readyStatus := corev1.ConditionFalse
	if allReady {
		readyStatus = corev1.ConditionTrue
	}
	want := pod.DeepCopy()
	want.Status.Phase = corev1.PodRunning
	want.Status.HostIP, want.Status.PodIP = r.apiHost, rp.ip
	want.Status.HostIPs, want.Status.PodIPs = []corev1.HostIP{{IP: r.apiHost}}, []corev1.PodIP{{IP: rp.ip}}
	want.Status.StartTime = &metav1.Time{Time: rp.started}
	want.Status.ContainerStatuses = statuses
	for _, t := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
		s := corev1.ConditionTrue
		if t == corev1.ContainersReady || t == corev1.PodReady {
			s = readyStatus
		}
		setCondition(&want.Status, t, s, now)
	}
	if equalStatus(pod.Status, want.Status) {
		return nil
	}
	return r.Status().Patch(ctx, want, client.MergeFrom(pod))
}

func setCondition(st *corev1.PodStatus, t corev1.PodConditionType, s corev1.ConditionStatus, now metav1.Time) {
	for i := range st.Conditions {
		if st.Conditions[i].Type == t {
			if st.Conditions[i].Status != s {
				st.Conditions[i].Status, st.Conditions[i].LastTransitionTime = s, now
			}
			return
		}
	}
	st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: s, LastTransitionTime: now})
}

// equalStatus compares what observe writes, so an unchanged pod costs no write.
func equalStatus(a, b corev1.PodStatus) bool {
	if a.Phase != b.Phase || a.PodIP != b.PodIP || len(a.Conditions) != len(b.Conditions) || len(a.ContainerStatuses) != len(b.ContainerStatuses) {
		return false
	}
	for i := range a.Conditions {
		if a.Conditions[i].Type != b.Conditions[i].Type || a.Conditions[i].Status != b.Conditions[i].Status {
			return false
		}
	}
	for i := range a.ContainerStatuses {
		x, y := a.ContainerStatuses[i], b.ContainerStatuses[i]
		if x.Ready != y.Ready || x.RestartCount != y.RestartCount || x.ContainerID != y.ContainerID {
			return false
		}
	}
	return true
}

// seconds is a probe's duration field, or its API default when unset.
func seconds(v, dflt int32) time.Duration {
	if v <= 0 {
		v = dflt
	}
	return time.Duration(v) * time.Second
}

// threshold is a probe's failureThreshold, or the API default of 3.
func threshold(v int32) int32 {
	if v <= 0 {
		return 3
	}
	return v
}

// probe runs an HTTP(S) GET probe against the pod, as the kubelet does: a
// status from 200 to 399 within the timeout passes; certificates are not
// checked.
func probe(ctx context.Context, p *corev1.Probe, c *corev1.Container, ip string) bool {
	port := p.HTTPGet.Port.IntValue()
	if p.HTTPGet.Port.Type == intstr.String {
		for _, cp := range c.Ports {
			if cp.Name == p.HTTPGet.Port.StrVal {
				port = int(cp.ContainerPort)
			}
		}
	}
	scheme := strings.ToLower(string(p.HTTPGet.Scheme))
	if scheme == "" {
		scheme = "http"
	}
	timeout := time.Duration(max(p.TimeoutSeconds, 1)) * time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+net.JoinHostPort(ip, strconv.Itoa(port))+p.HTTPGet.Path, nil)
	if err != nil {
		return false
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // as the kubelet's probes
	resp, err := hc.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 400
}

// waiting reports a pod whose containers could not start, as the kubelet
// reports CreateContainerConfigError and the like.
func (r *podRunner) waiting(ctx context.Context, pod *corev1.Pod, cause error) error {
	want := pod.DeepCopy()
	want.Status.Phase = corev1.PodPending
	want.Status.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		want.Status.ContainerStatuses = append(want.Status.ContainerStatuses, corev1.ContainerStatus{Name: c.Name, Image: c.Image,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CreateContainerConfigError", Message: cause.Error()}}})
	}
	if err := r.Status().Patch(ctx, want, client.MergeFrom(pod)); err != nil {
		return errors.Join(cause, err)
	}
	return nil
}

// remove stops a pod's containers and removes its network and volumes.
func (r *podRunner) remove(ctx context.Context, key types.NamespacedName, grace int64) {
	r.mu.Lock()
	rp := r.pods[key]
	delete(r.pods, key)
	r.mu.Unlock()
	if rp == nil {
		return
	}
	r.stopPod(ctx, rp, grace)
}

// stopPod removes the containers, network and volumes of a pod.
func (r *podRunner) stopPod(ctx context.Context, rp *runningPod, grace int64) {
	ids, _ := podman(ctx, "ps", "-aq", "--filter", "label="+podmanLabel+".pod="+string(rp.uid))
	if ids := strings.Fields(ids); len(ids) > 0 {
		_, _ = podman(ctx, append([]string{"rm", "-f", "-t", strconv.FormatInt(grace, 10)}, ids...)...)
	}
	_, _ = podman(ctx, "network", "rm", "-f", rp.network)
	_ = os.RemoveAll(filepath.Join(r.dir, "pods", string(rp.uid)))
}

// stopAllOnExit removes every pod's containers when novacron dev stops.
func (r *podRunner) stopAllOnExit() runnableFunc {
	return func(ctx context.Context) error {
		<-ctx.Done()
		r.mu.Lock()
		keys := make([]types.NamespacedName, 0, len(r.pods))
		for k := range r.pods {
			keys = append(keys, k)
		}
		r.mu.Unlock()
		slices.SortFunc(keys, func(a, b types.NamespacedName) int { return strings.Compare(a.Name, b.Name) })
		// A reconcile cut short may have started a container it did not
		// record: once none runs, remove everything labelled ours.
		r.inflight.Wait()
		for _, k := range keys {
			r.remove(context.Background(), k, 0)
		}
		removeLeftovers(context.Background())
		return nil
	}
}

type runnableFunc func(context.Context) error

func (f runnableFunc) Start(ctx context.Context) error { return f(ctx) }
