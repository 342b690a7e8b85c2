package devenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/devenv/simnode"
	"github.com/novacron/operator/operator/domain"
)

// SimulatedNodes writes one libvirt test-driver host per node, each with the
// catalog's volumes staged in its "default" pool, and returns their URIs.
func SimulatedNodes(dir string, nodes []SimNode, catalog domain.Catalog) (map[string]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	vols := catalog.Volumes()
	uris := map[string]string{}
	for _, n := range nodes {
		uri, err := simnode.Write(dir, simnode.Node{Name: n.Name, CPUs: int(n.Kind.CPUs), MemoryBytes: n.Kind.Memory.Value(), Images: vols})
		if err != nil {
			return nil, err
		}
		uris[n.Name] = uri
	}
	return uris, nil
}

// Register publishes each node as the kubelet and novacron-node would: a Ready
// Node with its capacity, its Hypervisor with the discovered devices, and
// those devices as DRA ResourceSlices (with NovaCron's DeviceClasses, which
// a cluster gets from manifests/node). Tests register their nodes with it.
func Register(ctx context.Context, c client.Client, nodes []SimNode, uris map[string]string, lab bool) error {
	if err := deviceClasses(ctx, c); err != nil {
		return err
	}
	for _, n := range nodes {
		labels := map[string]string{"kubernetes.io/hostname": n.Name, "kubernetes.io/os": "linux"}
		for k, v := range n.Kind.Labels {
			labels[k] = v
		}
		kn, err := registerNode(ctx, c, n.Name, labels, n.Allocatable())
		if err != nil {
			return err
		}
		hv := &novacronv1.Hypervisor{ObjectMeta: metav1.ObjectMeta{Name: n.Name},
			Spec: novacronv1.HypervisorSpec{URI: uris[n.Name], StoragePool: "default", Overcommit: n.Kind.Overcommit}}
		if lab {
			// The lab has no working KVM: guests run under TCG.
			hv.Spec.DomainType = "qemu"
		}
		if err := c.Create(ctx, hv); err != nil {
			return fmt.Errorf("creating Hypervisor %s: %w", n.Name, err)
		}
		// A patch of what the node publishes: the operator's probe may have
		// written the Reachable condition since the create.
		hvCreated := hv.DeepCopy()
		st, slices, err := n.publication()
		if err != nil {
			return err
		}
		for _, s := range slices {
			// Owned by the Node, as the agent's are: they go with it.
			s.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: kn.Name, UID: kn.UID}}
			if err := c.Create(ctx, s); err != nil {
				return fmt.Errorf("publishing the ResourceSlices of node %s: %w", n.Name, err)
			}
		}
		hv.Status = st
		now := metav1.Now()
		hv.Status.LastHeartbeatTime = &now
		if err := c.Status().Patch(ctx, hv, client.MergeFrom(hvCreated)); err != nil {
			return fmt.Errorf("publishing Hypervisor %s status: %w", n.Name, err)
		}
	}
	return nil
}

// deviceClasses creates NovaCron's DeviceClasses where they are not yet.
func deviceClasses(ctx context.Context, c client.Client) error {
	objs, err := decodeAll(scheme(), "node/deviceclasses.yaml")
	if err != nil {
		return err
	}
	for _, o := range objs {
		if err := c.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating DeviceClass %s: %w", o.GetName(), err)
		}
	}
	return nil
}

// registerNode publishes a Ready Node, as its kubelet would.
func registerNode(ctx context.Context, c client.Client, name string, labels map[string]string, alloc corev1.ResourceList) (*corev1.Node, error) {
	kn := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if err := c.Create(ctx, kn); err != nil {
		return nil, fmt.Errorf("creating Node %s: %w", name, err)
	}
	// Patches, not updates: kube-controller-manager (in novacron dev)
	// writes the new Node too.
	created := kn.DeepCopy()
	kn.Status = corev1.NodeStatus{Capacity: alloc, Allocatable: alloc,
		NodeInfo: corev1.NodeSystemInfo{KubeletVersion: kubernetesVersion(), OperatingSystem: "linux", Architecture: runtime.GOARCH},
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "simulated by novacron dev", LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}}
	if err := c.Status().Patch(ctx, kn, client.MergeFrom(created)); err != nil {
		return nil, fmt.Errorf("publishing Node %s status: %w", name, err)
	}
	// The API server taints new Nodes not-ready until the node lifecycle
	// controller sees them Ready; tests run none, so do its part.
	tainted := kn.DeepCopy()
	kn.Spec.Taints = nil
	if err := c.Patch(ctx, kn, client.MergeFrom(tainted)); err != nil {
		return nil, fmt.Errorf("untainting Node %s: %w", name, err)
	}
	return kn, nil
}

// kubernetesVersion is the Kubernetes release this program is built with
// (the module k8s.io/kubernetes), which the simulated kubelets report as
// theirs: the API server `make envtest` builds is the same release. Test
// binaries carry no module list; their Nodes show no version.
func kubernetesVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, m := range info.Deps {
			if m.Path == "k8s.io/kubernetes" {
				return m.Version
			}
		}
	}
	return ""
}

// labNodes starts and stops real libvirtd + QEMU nodes with test/lab/lab.sh.
// With tls, each node gets an address on the lab bridge and is reached, and
// migrated to, over qemu+tls (the shipped operator allows nothing else);
// otherwise over its unix socket.
type labNodes struct {
	script  string
	tls     bool
	started []string
}

// labHostIP is this machine's address on the lab bridge (lab.sh's HOST_IP).
const labHostIP = "10.200.0.254"

// labNodeIP is the lab-bridge address of the i-th dev node; the lab's own
// tests use addresses below 100.
func labNodeIP(i int) string { return fmt.Sprintf("10.200.0.%d", 100+i) }

func (l *labNodes) run(ctx context.Context, args ...string) (string, error) {
	return command(ctx, l.script, args...)
}

// command runs a program and returns what it printed; when it fails, the
// error says what it was asked and what it said on stderr.
func command(ctx context.Context, name string, args ...string) (string, error) {
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// start starts a lab node per node and returns their URIs, and with tls
// their migration URIs.
func (l *labNodes) start(ctx context.Context, nodes []SimNode) (uris, migrationURIs map[string]string, err error) {
	if os.Geteuid() != 0 {
		return nil, nil, fmt.Errorf("--lab needs root: it starts libvirtd and QEMU for each node")
	}
	if _, err := l.run(ctx, "install"); err != nil {
		return nil, nil, err
	}
	if _, err := l.run(ctx, "guest"); err != nil {
		return nil, nil, err
	}
	uris, migrationURIs = map[string]string{}, map[string]string{}
	for i, n := range nodes {
		// Empty, whatever an earlier novacron dev that was killed left on
		// a node of the same name.
		if _, err := l.run(ctx, "stop", "novacron-dev-"+n.Name); err != nil {
			return nil, nil, err
		}
		args := []string{"start", "novacron-dev-" + n.Name}
		if l.tls {
			args = append(args, labNodeIP(i))
		}
		uri, err := l.run(ctx, args...)
		if err != nil {
			return nil, nil, err
		}
		l.started = append(l.started, "novacron-dev-"+n.Name)
		uris[n.Name] = uri
		if l.tls {
			uris[n.Name] = "qemu+tls://" + labNodeIP(i) + "/system"
			migrationURIs[n.Name] = uris[n.Name]
		}
	}
	return uris, migrationURIs, nil
}

// setMigrationURIs sets the Hypervisors' migration URIs.
func setMigrationURIs(ctx context.Context, c client.Client, uris map[string]string) error {
	for name, uri := range uris {
		hv := &novacronv1.Hypervisor{ObjectMeta: metav1.ObjectMeta{Name: name}}
		patch := []byte(fmt.Sprintf(`{"spec":{"migrationURI":%q}}`, uri))
		if err := c.Patch(ctx, hv, client.RawPatch(types.MergePatchType, patch)); err != nil {
			return fmt.Errorf("setting Hypervisor %s's migration URI: %w", name, err)
		}
	}
	return nil
}

// stop stops every node started, even after ctx ended.
func (l *labNodes) stop() {
	for _, n := range l.started {
		_, _ = l.run(context.Background(), "stop", n)
	}
}
