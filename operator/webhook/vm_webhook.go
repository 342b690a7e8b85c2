package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/devices"
	"github.com/novacron/operator/operator/hooks"
)

// +kubebuilder:webhook:path=/mutate-novacron-io-v1alpha1-virtualmachine,mutating=true,failurePolicy=fail,sideEffects=None,groups=novacron.io,resources=virtualmachines,verbs=create;update,versions=v1alpha1,name=mvirtualmachine.novacron.io,admissionReviewVersions=v1,timeoutSeconds=5
// +kubebuilder:webhook:path=/validate-novacron-io-v1alpha1-virtualmachine,mutating=false,failurePolicy=fail,sideEffects=None,groups=novacron.io,resources=virtualmachines,verbs=create;update,versions=v1alpha1,name=vvirtualmachine.novacron.io,admissionReviewVersions=v1,timeoutSeconds=5

// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=novacron.io,resources=hypervisors,verbs=get;list;watch
// +kubebuilder:rbac:groups=k8s.cni.cncf.io,resources=network-attachment-definitions,verbs=get;list;watch

// VMDefaulter fills in what a user of a VM platform expects without saying.
// It never overrides a value that was set.
type VMDefaulter struct{}

// Default sets the scheduler and, for a VM with no networks, one NIC on the
// default bridge network with DHCP. A VM without what it cannot go without
// (a template with resources and an image) is refused here, naming the
// fields: the response's patch would otherwise add them as the Go types'
// zero values ("cpu: 0", "source: \"\"") and the schema would report those
// instead of what is missing.
func (VMDefaulter) Default(ctx context.Context, vm *novacronv1.VirtualMachine) error {
	if req, err := admission.RequestFromContext(ctx); err == nil {
		if errs := missingRequired(req.Object.Raw); len(errs) > 0 {
			return apierrors.NewInvalid(novacronv1.GroupVersion.WithKind("VirtualMachine").GroupKind(), vm.Name, errs)
		}
	}
	spec := &vm.Spec.Template.Spec
	if spec.SchedulerName == "" {
		spec.SchedulerName = novacronv1.DefaultSchedulerName
	}
	if len(spec.Networks) == 0 {
		spec.Networks = []novacronv1.Network{{Name: "default", Type: novacronv1.NetworkTypeBridge, IPv4: &novacronv1.IPv4Config{Method: novacronv1.IPv4DHCP}}}
	}
	for i := range spec.Networks {
		n := &spec.Networks[i]
		if n.Type == "" {
			n.Type = novacronv1.NetworkTypeBridge
		}
		if n.IPv4 != nil && n.IPv4.Method == "" {
			n.IPv4.Method = novacronv1.IPv4DHCP
		}
	}
	for i := range spec.Devices {
		if spec.Devices[i].Count == 0 {
			spec.Devices[i].Count = 1
		}
	}
	if vm.Spec.Running == nil {
		running := true
		vm.Spec.Running = &running
	}
	return nil
}

// missingRequired names the fields of a VM (as sent) whose Go types have no
// "absent" of their own.
func missingRequired(raw []byte) field.ErrorList {
	var vm struct {
		Spec struct {
			Template *struct {
				Spec *struct {
					Resources *struct {
						CPU    *json.RawMessage `json:"cpu"`
						Memory *json.RawMessage `json:"memory"`
					} `json:"resources"`
					Image *struct {
						Source *string `json:"source"`
					} `json:"image"`
				} `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	if json.Unmarshal(raw, &vm) != nil {
		return nil // the decoder reports what does not parse
	}
	tmpl := field.NewPath("spec", "template")
	t := vm.Spec.Template
	switch {
	case t == nil:
		return field.ErrorList{field.Required(tmpl, "a VirtualMachine needs a template: spec.template.spec with resources (cpu, memory) and image.source")}
	case t.Spec == nil:
		return field.ErrorList{field.Required(tmpl.Child("spec"), "the template needs resources (cpu, memory) and image.source")}
	}
	var errs field.ErrorList
	res := tmpl.Child("spec", "resources")
	switch r := t.Spec.Resources; {
	case r == nil:
		errs = append(errs, field.Required(res, "cpu and memory, such as {cpu: 2, memory: 4Gi}"))
	default:
		if r.CPU == nil {
			errs = append(errs, field.Required(res.Child("cpu"), "vCPUs, such as 2"))
		}
		if r.Memory == nil {
			errs = append(errs, field.Required(res.Child("memory"), "guest memory, such as 4Gi"))
		}
	}
	if t.Spec.Image == nil || t.Spec.Image.Source == nil {
		errs = append(errs, field.Required(tmpl.Child("spec", "image", "source"), "the image, such as marketplace://ubuntu-22.04-lts"))
	}
	return errs
}

// VMValidator checks VirtualMachines.
type VMValidator struct {
	// Client reads namespaces, from the manager's cache.
	Client client.Reader
	// APIReader reads NetworkAttachmentDefinitions live: their CRD may not be
	// installed, and only VMs with sr-iov networks need them.
	APIReader client.Reader
	// Policies are the admission policies.
	Policies PolicyGate
	// Schedulers are those a VM may name (empty: novacron-scheduler only).
	Schedulers []string
	// Access checks what the VM's author may do themselves.
	Access Access
	// HookEgress is where HTTP hooks may not go.
	HookEgress hooks.Egress
}

// ValidateCreate checks a new VM.
func (v *VMValidator) ValidateCreate(ctx context.Context, vm *novacronv1.VirtualMachine) (admission.Warnings, error) {
	return v.validate(ctx, "CREATE", vm, nil)
}

// ValidateUpdate checks a changed VM.
func (v *VMValidator) ValidateUpdate(ctx context.Context, old, vm *novacronv1.VirtualMachine) (admission.Warnings, error) {
	return v.validate(ctx, "UPDATE", vm, old)
}

// ValidateDelete allows every delete.
func (v *VMValidator) ValidateDelete(context.Context, *novacronv1.VirtualMachine) (admission.Warnings, error) {
	return nil, nil
}

func (v *VMValidator) validate(ctx context.Context, op string, vm, old *novacronv1.VirtualMachine) (admission.Warnings, error) {
	if old != nil && sameSpec(old, vm) && (samePolicyInput(old, vm) || !vm.DeletionTimestamp.IsZero()) {
		// Only what nothing judges changed (the operator's finalizer, an
		// owner reference), or a VM being deleted lets go of its metadata:
		// the spec was judged on the change that made it so. Judging it
		// again (a NetworkAttachmentDefinition its namespace's deletion
		// removed, a policy added since) must never hold a delete.
		return nil, nil
	}
	if old != nil && !old.DeletionTimestamp.IsZero() {
		return nil, apierrors.NewInvalid(novacronv1.GroupVersion.WithKind("VirtualMachine").GroupKind(), vm.Name, field.ErrorList{
			field.Forbidden(field.NewPath("spec"), "cannot change while the VirtualMachine is being deleted")})
	}
	errs := ValidateVMSpec(vm)
	if old != nil {
		errs = append(errs, validateRunningChanges(old, vm)...)
	} else if len(vm.Name) > 63 {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), vm.Name,
			"must be no more than 63 characters: it is the value of the novacron.io/vm label on the VM's pods, and the guest's hostname"))
	}
	errs = append(errs, v.validateNetworks(ctx, vm, old)...)
	errs = append(errs, v.validateScheduler(vm)...)
	if len(errs) == 0 {
		// Only for an otherwise valid VM: each check is a request to the
		// API server.
		errs = v.validateAccess(ctx, vm, old)
	}
	if len(errs) > 0 {
		return nil, apierrors.NewInvalid(novacronv1.GroupVersion.WithKind("VirtualMachine").GroupKind(), vm.Name, errs)
	}
	warnings, err := v.Policies.admit(ctx, op, "VirtualMachine", vm, old)
	if err != nil {
		return warnings, err
	}
	if old == nil || !equality.Semantic.DeepEqual(old.Spec.Template.Spec.Devices, vm.Spec.Template.Spec.Devices) || !equality.Semantic.DeepEqual(old.Spec.Template.Spec.Networks, vm.Spec.Template.Spec.Networks) {
		if w := v.unsatisfiable(ctx, vm); w != "" {
			warnings = append(warnings, w)
		}
	}
	return warnings, nil
}

// unsatisfiable warns of devices no node has (the VM is accepted: such a
// node may join; until then it waits, and this says why at once).
func (v *VMValidator) unsatisfiable(ctx context.Context, vm *novacronv1.VirtualMachine) string {
	spec := &vm.Spec.Template.Spec
	if len(spec.Devices) == 0 && !slices.ContainsFunc(spec.Networks, func(n novacronv1.Network) bool { return n.Type == novacronv1.NetworkTypeSRIOV }) {
		return ""
	}
	pools, err := devices.VFPools(ctx, devices.ReadNetworks(v.APIReader), vm)
	if err != nil {
		return "" // validateNetworks has said what is wrong with the networks
	}
	var list novacronv1.HypervisorList
	if err := v.Client.List(ctx, &list); err != nil {
		return ""
	}
	hvs := make([]*novacronv1.Hypervisor, len(list.Items))
	for i := range list.Items {
		hvs[i] = &list.Items[i]
	}
	req := devices.RequestFor(spec, pools)
	if why := devices.Unsatisfiable(&req, hvs); why != "" {
		return "spec.template.spec.devices: " + why + "; the VM waits until a node has them"
	}
	return ""
}

// sameSpec says whether an update leaves the spec as it was, or as the
// defaulter of this version makes it (an upgrade may default more than the
// version that stored it).
func sameSpec(old, vm *novacronv1.VirtualMachine) bool {
	if equality.Semantic.DeepEqual(old.Spec, vm.Spec) {
		return true
	}
	defaulted := old.DeepCopy()
	_ = VMDefaulter{}.Default(context.Background(), defaulted)
	return equality.Semantic.DeepEqual(defaulted.Spec, vm.Spec)
}

// samePolicyInput says whether an update leaves the spec, labels and
// annotations, what admission policies read, as they were.
func samePolicyInput(old, vm *novacronv1.VirtualMachine) bool {
	return sameSpec(old, vm) && equality.Semantic.DeepEqual(old.Labels, vm.Labels) &&
		equality.Semantic.DeepEqual(old.Annotations, vm.Annotations)
}

// ValidateVMSpec runs the checks that need nothing but the VM itself.
func ValidateVMSpec(vm *novacronv1.VirtualMachine) field.ErrorList {
	var errs field.ErrorList
	spec := field.NewPath("spec")
	nets := spec.Child("template", "spec", "networks")
	for i, n := range vm.Spec.Template.Spec.Networks {
		ip := n.IPv4
		if ip == nil || ip.Method != novacronv1.IPv4Static || ip.Address == "" {
			continue
		}
		addr, subnet, err := net.ParseCIDR(ip.Address)
		if err != nil {
			errs = append(errs, field.Invalid(nets.Index(i).Child("ipv4", "address"), ip.Address, "must be an IPv4 address with prefix length, such as 10.0.1.10/24"))
			continue
		}
		if gw := net.ParseIP(ip.Gateway); ip.Gateway != "" {
			switch {
			case gw == nil:
				errs = append(errs, field.Invalid(nets.Index(i).Child("ipv4", "gateway"), ip.Gateway, "must be an IPv4 address"))
			case !subnet.Contains(gw):
				errs = append(errs, field.Invalid(nets.Index(i).Child("ipv4", "gateway"), ip.Gateway, fmt.Sprintf("must be inside the address's subnet %s", subnet)))
			case gw.Equal(addr):
				errs = append(errs, field.Invalid(nets.Index(i).Child("ipv4", "gateway"), ip.Gateway, "must differ from the VM's own address"))
			}
		}
	}
	errs = append(errs, validateResources(spec.Child("template", "spec", "resources"), vm.Spec.Template.Spec.Resources)...)
	errs = append(errs, validatePodAffinity(spec.Child("template", "spec", "affinity"), vm.Namespace, vm.Spec.Template.Spec.Affinity)...)
	errs = append(errs, validateTemplateMeta(spec.Child("template", "metadata"), vm.Spec.Template.Metadata)...)
	if sp := vm.Spec.SnapshotPolicy; sp != nil {
		errs = append(errs, validateSchedule(spec.Child("snapshotPolicy"), sp.Schedule, sp.TimeZone)...)
	}
	if mp := vm.Spec.MigrationPolicy; mp != nil && mp.Bandwidth != "" {
		if _, err := novacronv1.ParseBandwidth(mp.Bandwidth); err != nil {
			errs = append(errs, field.Invalid(spec.Child("migrationPolicy", "bandwidth"), mp.Bandwidth, err.Error()))
		}
	}
	return errs
}

// validateTemplateMeta refuses NovaCron's own keys in what lands on the
// launcher pod: NovaCron's components trust them there (the scheduler's
// device assignment, the VM's size), so a tenant's copy would forge them.
// Largest memory and root disk a VM may ask for: beyond any host NovaCron
// runs on, and far below what overflows the arithmetic on them.
var (
	maxMemory = resource.MustParse("16Ti")
	maxDisk   = resource.MustParse("1Pi")
)

// validateResources bounds the VM's sizes: above zero, whole bytes (a
// quantity such as "1099511627776000001u" means a fraction of a byte, which
// Rego's units.parse_bytes cannot read), and within the maximums.
func validateResources(path *field.Path, r novacronv1.VMResources) field.ErrorList {
	var errs field.ErrorList
	check := func(name string, q resource.Quantity, max resource.Quantity) {
		switch {
		case q.Sign() <= 0:
			errs = append(errs, field.Invalid(path.Child(name), q.String(), "must be above zero"))
		case q.Cmp(max) > 0:
			errs = append(errs, field.Invalid(path.Child(name), q.String(), "must be at most "+max.String()))
		case q.Cmp(*resource.NewQuantity(q.Value(), q.Format)) != 0: // Value rounds a fraction up
			errs = append(errs, field.Invalid(path.Child(name), q.String(), "must be a whole number of bytes, such as 4Gi"))
		}
	}
	check("memory", r.Memory, maxMemory)
	if r.Disk != nil {
		check("disk", *r.Disk, maxDisk)
	}
	return errs
}

// validatePodAffinity keeps a VM's pod (anti-)affinity to its own namespace:
// a term over other namespaces lets a tenant place a VM beside a chosen
// victim's (co-location attacks on shared caches and memory bandwidth), or
// learn where another tenant's VMs run from where its own land.
func validatePodAffinity(path *field.Path, namespace string, a *corev1.Affinity) field.ErrorList {
	if a == nil {
		return nil
	}
	var errs field.ErrorList
	check := func(p *field.Path, t corev1.PodAffinityTerm) {
		if t.NamespaceSelector != nil {
			errs = append(errs, field.Forbidden(p.Child("namespaceSelector"), "a VM's pod affinity applies within its own namespace only"))
		}
		for i, ns := range t.Namespaces {
			if ns != namespace {
				errs = append(errs, field.Forbidden(p.Child("namespaces").Index(i), "a VM's pod affinity applies within its own namespace only"))
			}
		}
	}
	if pa := a.PodAffinity; pa != nil {
		checkTerms(path.Child("podAffinity"), pa.RequiredDuringSchedulingIgnoredDuringExecution, pa.PreferredDuringSchedulingIgnoredDuringExecution, check)
	}
	if pa := a.PodAntiAffinity; pa != nil {
		checkTerms(path.Child("podAntiAffinity"), pa.RequiredDuringSchedulingIgnoredDuringExecution, pa.PreferredDuringSchedulingIgnoredDuringExecution, check)
	}
	return errs
}

func checkTerms(path *field.Path, required []corev1.PodAffinityTerm, preferred []corev1.WeightedPodAffinityTerm, check func(*field.Path, corev1.PodAffinityTerm)) {
	for i, t := range required {
		check(path.Child("requiredDuringSchedulingIgnoredDuringExecution").Index(i), t)
	}
	for i, t := range preferred {
		check(path.Child("preferredDuringSchedulingIgnoredDuringExecution").Index(i).Child("podAffinityTerm"), t.PodAffinityTerm)
	}
}

// validateTemplateMeta checks the labels and annotations the launcher pod
// gets: Kubernetes' syntax and size (the pod would be refused later, with a
// message the tenant never sees) and no NovaCron keys.
func validateTemplateMeta(path *field.Path, m novacronv1.TemplateMeta) field.ErrorList {
	errs := metav1validation.ValidateLabels(m.Labels, path.Child("labels"))
	errs = append(errs, apivalidation.ValidateAnnotations(m.Annotations, path.Child("annotations"))...)
	for _, kv := range []struct {
		child string
		keys  map[string]string
	}{{"labels", m.Labels}, {"annotations", m.Annotations}} {
		for _, k := range slices.Sorted(maps.Keys(kv.keys)) {
			if novacronv1.IsReserved(k) {
				errs = append(errs, field.Forbidden(path.Child(kv.child).Key(k), "the novacron.io/ prefix is reserved for NovaCron"))
			}
		}
	}
	return errs
}

func validateSchedule(path *field.Path, schedule, tz string) field.ErrorList {
	_, _, err := novacronv1.ParseSchedule(schedule, tz)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, novacronv1.ErrTimeZone):
		return field.ErrorList{field.Invalid(path.Child("timeZone"), tz, novacronv1.ErrTimeZone.Error())}
	case errors.Is(err, novacronv1.ErrNeverFires):
		return field.ErrorList{field.Invalid(path.Child("schedule"), schedule, novacronv1.ErrNeverFires.Error())}
	}
	return field.ErrorList{field.Invalid(path.Child("schedule"), schedule, strings.TrimPrefix(err.Error(), fmt.Sprintf("schedule %q: ", schedule)))}
}

// validateRunningChanges refuses changes a running VM cannot take. Its
// size, devices and networks are also fixed while a launcher pod holds its
// place, whatever the phase (a Failed VM keeps its pod): the scheduler and
// ResourceQuota counted that pod, and the domain is made to match it. A
// stopped VM has no pod; its next one is placed, and counted, afresh.
func validateRunningChanges(old, vm *novacronv1.VirtualMachine) field.ErrorList {
	running := false
	switch old.Status.Phase {
	case novacronv1.VMStarting, novacronv1.VMRunning, novacronv1.VMStopping, novacronv1.VMMigrating:
		running = true
	}
	if !running && old.Status.LauncherPod == "" {
		return nil
	}
	if vm.Spec.Running != nil && !*vm.Spec.Running {
		return nil // stopping it in the same change is fine
	}
	var errs field.ErrorList
	p := field.NewPath("spec", "template", "spec")
	o, n := &old.Spec.Template.Spec, &vm.Spec.Template.Spec
	msg := fmt.Sprintf("cannot change while the VM is %s; stop it first (spec.running: false), then change it", old.Status.Phase)
	if !running {
		msg = fmt.Sprintf("cannot change while launcher pod %s holds the VM's place on node %s; stop the VM first (spec.running: false), then change it", old.Status.LauncherPod, old.Status.NodeName)
	}
	if !equality.Semantic.DeepEqual(o.Resources, n.Resources) {
		errs = append(errs, field.Forbidden(p.Child("resources"), msg))
	}
	if running && o.Image != n.Image {
		errs = append(errs, field.Forbidden(p.Child("image"), msg))
	}
	if !equality.Semantic.DeepEqual(o.Devices, n.Devices) {
		errs = append(errs, field.Forbidden(p.Child("devices"), msg))
	}
	if !equality.Semantic.DeepEqual(o.Networks, n.Networks) {
		errs = append(errs, field.Forbidden(p.Child("networks"), msg))
	}
	return errs
}

// validateScheduler allows only the schedulers that place VMs as NovaCron
// counts them (novacron-scheduler, or those the platform team adds): any
// other would skip the VM's capacity, device and policy checks.
func (v *VMValidator) validateScheduler(vm *novacronv1.VirtualMachine) field.ErrorList {
	name := vm.Spec.Template.Spec.SchedulerName
	allowed := v.Schedulers
	if len(allowed) == 0 {
		allowed = []string{novacronv1.DefaultSchedulerName}
	}
	if name == "" || slices.Contains(allowed, name) {
		return nil
	}
	return field.ErrorList{field.NotSupported(field.NewPath("spec", "template", "spec", "schedulerName"), name, allowed)}
}

// validateNetworks checks each sr-iov network names a NetworkAttachmentDefinition
// in the VM's namespace that says which VF pool (resource) it uses.
func (v *VMValidator) validateNetworks(ctx context.Context, vm, old *novacronv1.VirtualMachine) field.ErrorList {
	var errs field.ErrorList
	nets := field.NewPath("spec", "template", "spec", "networks")
	read := devices.ReadNetworks(v.APIReader)
	for i, n := range vm.Spec.Template.Spec.Networks {
		if old != nil && slices.ContainsFunc(old.Spec.Template.Spec.Networks, func(o novacronv1.Network) bool { return o.Name == n.Name && o.Type == n.Type }) {
			// Judged when it was added: a VM from before bridge networks
			// needed a definition can still be stopped or have its image
			// fixed (it joins the network again only once one exists).
			continue
		}
		var err error
		if n.Type == novacronv1.NetworkTypeSRIOV {
			_, err = devices.VFPool(ctx, read, vm.Namespace, n.Name)
		} else {
			_, err = devices.BridgeNetwork(ctx, read, vm.Namespace, n.Name)
		}
		switch {
		case devices.IsVMError(err):
			errs = append(errs, field.Invalid(nets.Index(i).Child("name"), n.Name, err.Error()))
		case err != nil:
			errs = append(errs, field.InternalError(nets.Index(i).Child("name"), err))
		}
	}
	return errs
}
