// Package agent is novacron-node's loop on a node: every round it
// discovers the node's devices and publishes them (the Hypervisor's device
// inventory by server-side apply, the DRA ResourceSlice through
// k8s.io/dynamic-resource-allocation's resourceslice controller) and renews
// the node's heartbeat Lease.
package agent

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/dynamic-resource-allocation/deviceattribute"
	"k8s.io/dynamic-resource-allocation/resourceslice"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/devices/discovery"
)

// What the agent touches, and no more: manifests/node/role.yaml is
// generated from these, and manifests/node/node-restriction.yaml narrows
// each agent's writes to its own node.
// +kubebuilder:rbac:groups=novacron.io,resources=hypervisors/status,verbs=patch
// +kubebuilder:rbac:groups=resource.k8s.io,resources=resourceslices,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;create;update,namespace=novacron-system

// FieldManager is the agent's name in server-side apply: it owns the
// Hypervisor status's device inventory, the operator the rest.
const FieldManager = "novacron-node"

// LeaseName is a node's heartbeat Lease in the agent's namespace.
func LeaseName(node string) string { return "novacron-node-" + node }

// Options configure an agent.
type Options struct {
	Node      string
	Namespace string // of the heartbeat Lease
	SysfsRoot string
	Config    discovery.Config
	// ConfigPath, when set, is read every round instead of Config.
	ConfigPath string
	IDs        *discovery.PCIIDs
	NVML       discovery.NVML
	// Interval between rounds; the Lease lasts three of them.
	Interval time.Duration
	Client   client.Client
	Kube     kubernetes.Interface
}

// Agent publishes one node's devices.
type Agent struct {
	opts   Options
	slices *resourceslice.Controller
	// known are the devices published so far, by name: one gone from the
	// bus is published again, tainted.
	known map[string]resourceapi.Device
}

// New starts the agent's ResourceSlice controller; rounds start with Run or
// Round.
func New(ctx context.Context, opts Options) (*Agent, error) {
	if opts.Node == "" {
		return nil, fmt.Errorf("the node name is required")
	}
	if opts.IDs == nil {
		opts.IDs = &discovery.PCIIDs{}
	}
	a := &Agent{opts: opts, known: map[string]resourceapi.Device{}}
	// Devices published before a restart and gone since are still known.
	mine, err := a.slicesOnNode(ctx, true)
	if err != nil {
		return nil, err
	}
	var published []resourceapi.Device
	for _, s := range mine {
		for _, d := range s.Spec.Devices {
			a.known[d.Name] = d
			published = append(published, d)
		}
	}
	a.slices, err = resourceslice.StartController(ctx, resourceslice.Options{
		DriverName: discovery.DriverName,
		KubeClient: opts.Kube,
		Owner:      &resourceslice.Owner{APIVersion: "v1", Kind: "Node", Name: opts.Node},
		// What is published stays published until a round says otherwise:
		// a controller started empty would delete it if the first round
		// failed.
		Resources: a.resources(published),
		ErrorHandler: func(ctx context.Context, err error, msg string) {
			log.FromContext(ctx).Error(err, msg, "node", opts.Node)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("starting the ResourceSlice controller: %w", err)
	}
	return a, nil
}

// Stop stops the ResourceSlice controller (the slices stay).
func (a *Agent) Stop() { a.slices.Stop() }

// Run does a round every interval until ctx ends; a failed round is logged
// and the next one tries again.
func (a *Agent) Run(ctx context.Context) {
	t := time.NewTicker(a.opts.Interval)
	defer t.Stop()
	for {
		if err := a.Round(ctx); err != nil {
			log.FromContext(ctx).Error(err, "node agent round", "node", a.opts.Node)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// resources is the node's pool: its devices in slices of at most
// discovery.MaxDevicesPerSlice.
func (a *Agent) resources(devs []resourceapi.Device) *resourceslice.DriverResources {
	var slices []resourceslice.Slice
	for _, chunk := range discovery.Chunks(devs) {
		slices = append(slices, resourceslice.Slice{Devices: chunk})
	}
	return &resourceslice.DriverResources{Pools: map[string]resourceslice.Pool{a.opts.Node: {Slices: slices}}}
}

// Round discovers the node once and publishes what it found. The heartbeat
// is renewed whatever else failed: the agent runs.
func (a *Agent) Round(ctx context.Context) error {
	err := a.publish(ctx)
	if hb := a.heartbeat(ctx); hb != nil {
		return errors.Join(err, hb)
	}
	return err
}

func (a *Agent) publish(ctx context.Context) error {
	o := a.opts
	cfg := o.Config
	if o.ConfigPath != "" {
		var err error
		// Read every round: the platform team's edits take effect
		// without a restart.
		if cfg, err = discovery.LoadConfig(o.ConfigPath); err != nil {
			return err
		}
	}
	inv, err := discovery.Discover(o.SysfsRoot, cfg, o.IDs, o.NVML)
	if err != nil {
		return err
	}
	others, err := a.slicesOnNode(ctx, false)
	if err != nil {
		return err
	}
	inv = discovery.WithoutOthers(inv, o.Node, others)
	devs, err := discovery.Devices(o.SysfsRoot, inv)
	if err != nil {
		return err
	}
	devs = a.withVanished(devs, inv.Bus)
	a.slices.Update(a.resources(devs))
	return a.applyInventory(ctx, inv)
}

// withVanished adds the devices published before and no longer on the bus,
// tainted. One still on the bus but no longer offered (excluded, bound to
// the host's driver, published by another DRA driver) is withdrawn.
func (a *Agent) withVanished(devs []resourceapi.Device, bus []string) []resourceapi.Device {
	onBus := map[string]bool{}
	for _, addr := range bus {
		onBus[addr] = true
	}
	var gone []resourceapi.Device
	for _, d := range a.known {
		if !onBus[pciAddress(d)] {
			d = *d.DeepCopy()
			if !hasTaint(d, discovery.TaintVanished) {
				d.Taints = append(d.Taints, resourceapi.DeviceTaint{Key: discovery.TaintVanished, Effect: resourceapi.DeviceTaintEffectNoSchedule})
			}
			gone = append(gone, d)
		}
	}
	sort.Slice(gone, func(i, j int) bool { return gone[i].Name < gone[j].Name })
	devs = append(devs, gone...)
	a.known = map[string]resourceapi.Device{}
	for _, d := range devs {
		a.known[d.Name] = d
	}
	return devs
}

func pciAddress(d resourceapi.Device) string {
	if a, ok := d.Attributes[deviceattribute.StandardDeviceAttributePCIBusID]; ok && a.StringValue != nil {
		return *a.StringValue
	}
	return ""
}

func hasTaint(d resourceapi.Device, key string) bool {
	for _, t := range d.Taints {
		if t.Key == key {
			return true
		}
	}
	return false
}

// slicesOnNode lists the node's ResourceSlices: NovaCron's own (mine) or
// every other driver's.
func (a *Agent) slicesOnNode(ctx context.Context, mine bool) ([]resourceapi.ResourceSlice, error) {
	list, err := a.opts.Kube.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector(resourceapi.ResourceSliceSelectorNodeName, a.opts.Node).String(),
	})
	if err != nil {
		return nil, fmt.Errorf("listing ResourceSlices of node %s: %w", a.opts.Node, err)
	}
	var out []resourceapi.ResourceSlice
	for _, s := range list.Items {
		if (s.Spec.Driver == discovery.DriverName) == mine {
			out = append(out, s)
		}
	}
	return out, nil
}

// applyInventory server-side applies the device fields of the node's
// Hypervisor status, as FieldManager. A device list the agent stops
// applying (no GPUs left) is removed, since no other manager owns it.
func (a *Agent) applyInventory(ctx context.Context, inv discovery.Inventory) error {
	st := discovery.HypervisorStatus(inv)
	fields, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&novacronv1.HypervisorStatus{
		GPUs: st.GPUs, SRIOV: st.SRIOV, NUMANodes: st.NUMANodes,
	})
	if err != nil {
		return err
	}
	u := &unstructured.Unstructured{Object: map[string]any{"status": fields}}
	u.SetAPIVersion(novacronv1.GroupVersion.String())
	u.SetKind("Hypervisor")
	u.SetName(a.opts.Node)
	err = a.opts.Client.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldManager), client.ForceOwnership)
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("no Hypervisor %s: the platform team registers the node (its URI) first", a.opts.Node)
	}
	if err != nil {
		return fmt.Errorf("applying Hypervisor %s's device inventory: %w", a.opts.Node, err)
	}
	return nil
}

// heartbeat renews the node's Lease, creating it the first time.
func (a *Agent) heartbeat(ctx context.Context) error {
	o := a.opts
	now := metav1.NewMicroTime(time.Now())
	seconds := int32(max(3*o.Interval, 3*time.Second) / time.Second)
	var lease coordinationv1.Lease
	key := client.ObjectKey{Namespace: o.Namespace, Name: LeaseName(o.Node)}
	err := o.Client.Get(ctx, key, &lease)
	if apierrors.IsNotFound(err) {
		lease = coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(o.Node), LeaseDurationSeconds: &seconds, AcquireTime: &now, RenewTime: &now}}
		err = o.Client.Create(ctx, &lease)
	} else if err == nil {
		lease.Spec.HolderIdentity, lease.Spec.LeaseDurationSeconds, lease.Spec.RenewTime = ptr.To(o.Node), &seconds, &now
		err = o.Client.Update(ctx, &lease)
	}
	if err != nil {
		return fmt.Errorf("renewing the heartbeat Lease %s: %w", key, err)
	}
	return nil
}
