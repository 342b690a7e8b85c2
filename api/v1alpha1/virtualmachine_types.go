package v1alpha1

import (
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// DefaultSchedulerName is the secondary scheduler that places VM launcher pods
// when a VM names none.
const DefaultSchedulerName = "novacron-scheduler"

// VirtualMachineSpec is the desired state of a virtual machine.
type VirtualMachineSpec struct {
	// Running says whether the VM should be running. Patch it to false to stop the
	// VM gracefully (ACPI shutdown, then a forced stop after a timeout) and back to
	// true to start it again on a node the scheduler picks.
	// +kubebuilder:default=true
	// +optional
	Running *bool `json:"running,omitempty"`

	// Template describes the machine: its size, image, networks, devices,
	// placement and lifecycle hooks.
	Template VirtualMachineTemplateSpec `json:"template"`

	// MigrationPolicy says whether and how the VM may be live-migrated between
	// hypervisors (on request, on node drain and by the rebalancer).
	// +optional
	MigrationPolicy *MigrationPolicy `json:"migrationPolicy,omitempty"`

	// SnapshotPolicy takes snapshots of the VM on a schedule and keeps the newest
	// ones.
	// +optional
	SnapshotPolicy *SnapshotPolicy `json:"snapshotPolicy,omitempty"`
}

// VirtualMachineTemplateSpec is the template of the machine a VM runs.
type VirtualMachineTemplateSpec struct {
	// Metadata whose labels and annotations are copied onto the VM's launcher pod.
	// +optional
	Metadata TemplateMeta `json:"metadata,omitempty"`

	// Spec is the machine itself.
	Spec VirtualMachineInstanceSpec `json:"spec"`
}

// VirtualMachineInstanceSpec is the machine: hardware, image, networks and
// placement.
// +kubebuilder:validation:XValidation:rule="!(has(self.userData) && has(self.userDataSecretRef))",message="set userData or userDataSecretRef, not both"
type VirtualMachineInstanceSpec struct {
	// Resources are the virtual hardware: vCPUs, memory and root disk size.
	Resources VMResources `json:"resources"`

	// Image is the boot disk's source image.
	Image ImageSource `json:"image"`

	// Networks are the VM's network interfaces, in the order the guest sees them.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=16
	// +optional
	Networks []Network `json:"networks,omitempty"`

	// Devices are host devices passed through to the VM, such as GPUs.
	// +kubebuilder:validation:MaxItems=16
	// +optional
	Devices []Device `json:"devices,omitempty"`

	// UserData is cloud-init user-data given to the guest through a NoCloud
	// data source. Use userDataSecretRef instead when it holds keys or passwords.
	// +kubebuilder:validation:MaxLength=65536
	// +optional
	UserData string `json:"userData,omitempty"`

	// UserDataSecretRef takes cloud-init user-data from a Secret in the VM's
	// namespace.
	// +optional
	UserDataSecretRef *SecretKeyRef `json:"userDataSecretRef,omitempty"`

	// NodeSelector limits the VM to nodes with these labels.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// Affinity holds node affinity and pod (anti-)affinity rules, applied to the
	// VM's launcher pod; template.metadata.labels are the labels other VMs select.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`

	// Tolerations let the VM run on nodes with matching taints.
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// SchedulerName is the scheduler that places the VM. Defaults to
	// novacron-scheduler.
	// +optional
	SchedulerName string `json:"schedulerName,omitempty"`

	// Lifecycle holds hooks run before the VM starts and before it stops.
	// +optional
	Lifecycle *Lifecycle `json:"lifecycle,omitempty"`
}

// VMResources is the virtual hardware of a VM.
type VMResources struct {
	// CPU is the number of virtual CPUs.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1024
	CPU int32 `json:"cpu"`

	// Memory is the guest memory, as a quantity such as 4Gi.
	Memory resource.Quantity `json:"memory"`

	// Disk is the size of the root disk created from the image, such as 50Gi.
	// Defaults to 10Gi.
	// +optional
	Disk *resource.Quantity `json:"disk,omitempty"`
}

// ImageSource names the image a VM boots from.
type ImageSource struct {
	// Source is the image's address: marketplace://NAME for an image from the
	// platform's image catalog, or an http(s):// URL.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^(marketplace://[A-Za-z0-9][A-Za-z0-9._-]*|https?://\S+)$`
	Source string `json:"source"`
}

// NetworkType is how an interface attaches to the host.
// +kubebuilder:validation:Enum=bridge;sr-iov
type NetworkType string

const (
	// NetworkTypeBridge attaches a virtio NIC to a host bridge.
	NetworkTypeBridge NetworkType = "bridge"
	// NetworkTypeSRIOV passes an SR-IOV virtual function through to the VM.
	NetworkTypeSRIOV NetworkType = "sr-iov"
)

// Network is one network interface of a VM.
type Network struct {
	// Name of the interface. For sr-iov it also names the
	// NetworkAttachmentDefinition that says which VF pool to use.
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// Type is bridge (a virtio NIC on a host bridge) or sr-iov (a passed-through
	// virtual function).
	// +kubebuilder:default=bridge
	// +optional
	Type NetworkType `json:"type,omitempty"`

	// IPv4 configures the guest's IPv4 address through cloud-init.
	// +optional
	IPv4 *IPv4Config `json:"ipv4,omitempty"`
}

// IPv4Method is how the guest gets its IPv4 address.
// +kubebuilder:validation:Enum=dhcp;static
type IPv4Method string

const (
	// IPv4DHCP asks a DHCP server for the address.
	IPv4DHCP IPv4Method = "dhcp"
	// IPv4Static uses the address and gateway from the spec.
	IPv4Static IPv4Method = "static"
)

// IPv4Config is an interface's IPv4 configuration.
// +kubebuilder:validation:XValidation:rule="self.method != 'static' || has(self.address)",message="address is required when method is static",fieldPath=".address",reason=FieldValueRequired
// +kubebuilder:validation:XValidation:rule="self.method == 'static' || (!has(self.address) && !has(self.gateway))",message="address and gateway are only used when method is static",fieldPath=".method"
type IPv4Config struct {
	// Method is dhcp or static.
	// +kubebuilder:default=dhcp
	// +optional
	Method IPv4Method `json:"method,omitempty"`

	// Address is the static address with its prefix length, such as 10.0.1.10/24.
	// +kubebuilder:validation:MaxLength=18
	// +kubebuilder:validation:XValidation:rule="isCIDR(self) && cidr(self).ip().family() == 4",message="must be an IPv4 address with prefix length, such as 10.0.1.10/24"
	// +optional
	Address string `json:"address,omitempty"`

	// Gateway is the default gateway for a static address, such as 10.0.1.1.
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:XValidation:rule="isIP(self) && ip(self).family() == 4",message="must be an IPv4 address, such as 10.0.1.1"
	// +optional
	Gateway string `json:"gateway,omitempty"`
}

// DeviceType is a kind of host device.
// +kubebuilder:validation:Enum=gpu
type DeviceType string

// DeviceTypeGPU is a GPU passed through to the VM.
const DeviceTypeGPU DeviceType = "gpu"

// Device asks for host devices passed through to the VM.
type Device struct {
	// Type of device. Only gpu for now.
	Type DeviceType `json:"type"`

	// Vendor of the device, such as nvidia.
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=63
	Vendor string `json:"vendor"`

	// Model of the device, such as tesla-t4. Empty means any model of the vendor.
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=63
	// +optional
	Model string `json:"model,omitempty"`

	// Count is how many such devices the VM gets.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=16
	// +kubebuilder:default=1
	// +optional
	Count int32 `json:"count,omitempty"`
}

// SecretKeyRef points at one key of a Secret in the same namespace.
type SecretKeyRef struct {
	// Name of the Secret.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`

	// Key in the Secret's data. Defaults to userdata.
	// +kubebuilder:default=userdata
	// +optional
	Key string `json:"key,omitempty"`
}

// Lifecycle holds the VM's lifecycle hooks.
type Lifecycle struct {
	// PreStart runs before the VM starts, every time it starts.
	// +optional
	PreStart *LifecycleHook `json:"preStart,omitempty"`

	// PreStop runs before the VM is stopped or deleted.
	// +optional
	PreStop *LifecycleHook `json:"preStop,omitempty"`
}

// HookFailurePolicy says what a failed hook does.
// +kubebuilder:validation:Enum=Fail;Ignore
type HookFailurePolicy string

const (
	// HookFail stops the transition: a failed preStart keeps the VM stopped.
	HookFail HookFailurePolicy = "Fail"
	// HookIgnore records the failure in an event and goes on.
	HookIgnore HookFailurePolicy = "Ignore"
)

// LifecycleHook is one hook: an HTTP call or a Kubernetes Job.
// +kubebuilder:validation:XValidation:rule="[has(self.http), has(self.job)].filter(x, x).size() == 1",message="set exactly one of http or job"
type LifecycleHook struct {
	// HTTP calls a URL.
	// +optional
	HTTP *HTTPHook `json:"http,omitempty"`

	// Job runs a Kubernetes Job and waits for it to succeed.
	// +optional
	Job *JobHook `json:"job,omitempty"`

	// TimeoutSeconds bounds one try of the hook.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=3600
	// +kubebuilder:default=30
	// +optional
	TimeoutSeconds int32 `json:"timeoutSeconds,omitempty"`

	// Retries is how many more times a failed hook is tried.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10
	// +optional
	Retries int32 `json:"retries,omitempty"`

	// FailurePolicy is Fail (a failed hook stops the transition) or Ignore.
	// +kubebuilder:default=Fail
	// +optional
	FailurePolicy HookFailurePolicy `json:"failurePolicy,omitempty"`
}

// HTTPHook calls a URL with the VM's identity in the request body.
type HTTPHook struct {
	// URL to call; a 2xx answer is success.
	// +kubebuilder:validation:Pattern=`^https?://\S+$`
	// +kubebuilder:validation:MaxLength=2048
	URL string `json:"url"`

	// Method is the HTTP method. Defaults to POST.
	// +kubebuilder:validation:Enum=GET;POST;PUT
	// +kubebuilder:default=POST
	// +optional
	Method string `json:"method,omitempty"`

	// Headers added to the request. They are in clear in the VM, for anyone
	// who may read it: credentials (Authorization, Cookie, tokens) go in
	// headersFrom.
	// +optional
	Headers map[string]string `json:"headers,omitempty"`

	// HeadersFrom adds headers whose values are kept in Secrets of the VM's
	// namespace. The VM's author must be allowed to get each Secret.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=16
	// +optional
	HeadersFrom []HTTPHeaderFromSecret `json:"headersFrom,omitempty"`
}

// HTTPHeaderFromSecret is a request header whose value is a key of a Secret.
type HTTPHeaderFromSecret struct {
	// Name of the header, such as Authorization.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	Name string `json:"name"`
	// SecretName is a Secret in the VM's namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	SecretName string `json:"secretName"`
	// Key in the Secret's data.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Key string `json:"key"`
}

// JobHook runs a Job made from a template in the VM's namespace.
type JobHook struct {
	// Template of the Job. The operator names it after the VM and hook, and owns it.
	Template JobTemplate `json:"template"`
}

// JobTemplate is a Job's metadata and spec.
type JobTemplate struct {
	// Metadata whose labels and annotations the Job gets.
	// +optional
	Metadata TemplateMeta `json:"metadata,omitempty"`

	// Spec of the Job (a batch/v1 JobSpec). Its schema is checked when the Job is
	// created rather than in the VirtualMachine's schema, which would otherwise
	// carry a whole pod spec and outgrow what the API server stores.
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	// +kubebuilder:pruning:PreserveUnknownFields
	Spec batchv1.JobSpec `json:"spec"`
}

// MigrationPolicy says whether and how a VM is live-migrated.
type MigrationPolicy struct {
	// AllowLiveMigration lets the VM move between hypervisors while it runs.
	// +optional
	AllowLiveMigration bool `json:"allowLiveMigration,omitempty"`

	// Compression compresses memory pages on the wire.
	// +optional
	Compression bool `json:"compression,omitempty"`

	// Encrypted requires migration traffic to be encrypted (libvirt TLS). A
	// migration is refused rather than run in clear when TLS is not set up.
	// +optional
	Encrypted bool `json:"encrypted,omitempty"`

	// Bandwidth caps migration traffic, in bits per second with a unit:
	// 500Mbps, 1Gbps, 10Gbps.
	// +kubebuilder:validation:Pattern=`^[1-9][0-9]*(\.[0-9]+)?[KMGT]bps$`
	// +kubebuilder:validation:MaxLength=32
	// +optional
	Bandwidth string `json:"bandwidth,omitempty"`
}

// SnapshotPolicy takes scheduled snapshots and keeps the newest ones.
type SnapshotPolicy struct {
	// Schedule in standard 5-field cron form (minute hour day-of-month month
	// day-of-week), such as "0 2 * * *" for 02:00 every day.
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^\s*[0-9*/,-]+\s+[0-9*/,-]+\s+[0-9*/,-]+\s+[0-9A-Za-z*/,-]+\s+[0-9A-Za-z*/,-]+\s*$`
	Schedule string `json:"schedule"`

	// TimeZone the schedule is read in, as an IANA name such as Europe/Berlin.
	// Defaults to UTC.
	// +kubebuilder:validation:MaxLength=64
	// +optional
	TimeZone string `json:"timeZone,omitempty"`

	// Retention is how many scheduled snapshots to keep; older scheduled ones
	// are deleted. Snapshots taken by hand are never deleted by the policy.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	Retention int32 `json:"retention"`
}

// VMPhase is where a VM is in its life.
// +kubebuilder:validation:Enum=Pending;Scheduling;Scheduled;Starting;Running;Stopping;Stopped;Migrating;Failed;Unknown
type VMPhase string

// The phases of a VM.
const (
	VMPending    VMPhase = "Pending"
	VMScheduling VMPhase = "Scheduling"
	VMScheduled  VMPhase = "Scheduled"
	VMStarting   VMPhase = "Starting"
	VMRunning    VMPhase = "Running"
	VMStopping   VMPhase = "Stopping"
	VMStopped    VMPhase = "Stopped"
	VMMigrating  VMPhase = "Migrating"
	VMFailed     VMPhase = "Failed"
	VMUnknown    VMPhase = "Unknown"
)

// VirtualMachineStatus is what NovaCron observes of a VM.
type VirtualMachineStatus struct {
	// Phase is a one-word summary of where the VM is.
	// +optional
	Phase VMPhase `json:"phase,omitempty"`

	// NodeName is the node whose hypervisor runs the VM.
	// +optional
	NodeName string `json:"nodeName,omitempty"`

	// LauncherPod is the pod that reserves the VM's capacity on its node.
	// +optional
	LauncherPod string `json:"launcherPod,omitempty"`

	// LauncherPodUID is the UID of the launcher pod NovaCron made for the VM:
	// only that pod is the VM's (a pod of the same name made by anyone else
	// is not), whatever it claims.
	// +optional
	LauncherPodUID types.UID `json:"launcherPodUID,omitempty"`

	// DomainDefined says NovaCron defined the VM's domain on NodeName's
	// hypervisor (or found it there). From then on a domain missing there is
	// reported (Ready=False, DomainMissing) instead of defined again, which
	// could start a second copy of a guest that runs elsewhere or boot it
	// from a stale or blank disk. A platform admin who knows the guest runs
	// nowhere clears it (a status patch) to have the domain defined again.
	// +optional
	DomainDefined bool `json:"domainDefined,omitempty"`

	// LegacyVolumeNames says the VM's volumes keep the names they had
	// before NovaCron named volumes by VM UID (namespace_name-root.qcow2),
	// as the VM's own domain uses them. Set once, when the VM adopts them;
	// a later VM of the same name never does.
	// +optional
	LegacyVolumeNames bool `json:"legacyVolumeNames,omitempty"`

	// Conditions: Ready, Scheduled, HypervisorReachable, HooksSucceeded, CloudInit.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// Interfaces are the VM's NICs as seen by the hypervisor and guest.
	// +optional
	Interfaces []InterfaceStatus `json:"interfaces,omitempty"`

	// Devices are the host devices assigned to the VM.
	// +optional
	Devices []AssignedDevice `json:"devices,omitempty"`

	// MigrationState describes the VM's current or last live migration.
	// +optional
	MigrationState *MigrationState `json:"migrationState,omitempty"`

	// Snapshot reports the snapshot schedule: the next run and the last result.
	// +optional
	Snapshot *SnapshotScheduleStatus `json:"snapshot,omitempty"`

	// ObservedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// InterfaceStatus is one NIC of a running VM.
type InterfaceStatus struct {
	// Name of the network in the spec.
	Name string `json:"name"`
	// MAC address, stable for the life of the VM.
	// +optional
	MAC string `json:"mac,omitempty"`
	// IPAddress is the interface's primary IP address.
	// +optional
	IPAddress string `json:"ipAddress,omitempty"`
	// IPAddresses are all the interface's IP addresses.
	// +optional
	IPAddresses []string `json:"ipAddresses,omitempty"`
	// PCIAddress of the virtual function, for sr-iov interfaces.
	// +optional
	PCIAddress string `json:"pciAddress,omitempty"`
}

// AssignedDevice is a host device given to a VM.
type AssignedDevice struct {
	// Type of the device.
	Type DeviceType `json:"type"`
	// Vendor of the device.
	// +optional
	Vendor string `json:"vendor,omitempty"`
	// Model of the device.
	// +optional
	Model string `json:"model,omitempty"`
	// PCIAddress on the host, such as 0000:3b:00.0.
	PCIAddress string `json:"pciAddress"`
}

// MigrationState summarises a VM's current or last migration.
type MigrationState struct {
	// MigrationName is the VirtualMachineMigration.
	MigrationName string `json:"migrationName"`
	// SourceNode the VM moves from.
	// +optional
	SourceNode string `json:"sourceNode,omitempty"`
	// TargetNode the VM moves to.
	// +optional
	TargetNode string `json:"targetNode,omitempty"`
	// TargetPodUID is the UID of the target launcher pod the migration made.
	// +optional
	TargetPodUID types.UID `json:"targetPodUID,omitempty"`
	// Phase of the migration.
	// +optional
	Phase MigrationPhase `json:"phase,omitempty"`
	// StartTime of the migration.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// EndTime of the migration.
	// +optional
	EndTime *metav1.Time `json:"endTime,omitempty"`
}

// SnapshotScheduleStatus reports the snapshot schedule.
type SnapshotScheduleStatus struct {
	// NextScheduleTime is when the next scheduled snapshot is due.
	// +optional
	NextScheduleTime *metav1.Time `json:"nextScheduleTime,omitempty"`
	// LastScheduleTime is when the last scheduled snapshot was taken.
	// +optional
	LastScheduleTime *metav1.Time `json:"lastScheduleTime,omitempty"`
	// LastSnapshotName is the last scheduled snapshot.
	// +optional
	LastSnapshotName string `json:"lastSnapshotName,omitempty"`
	// LastResult is Succeeded or Failed, with the reason in Message.
	// +optional
	LastResult string `json:"lastResult,omitempty"`
	// Message explains the last result.
	// +optional
	Message string `json:"message,omitempty"`
}

// VirtualMachine is a virtual machine run by NovaCron on a node's hypervisor.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=vm;vms,categories=novacron
// +kubebuilder:printcolumn:name="Running",type=boolean,JSONPath=`.spec.running`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.status.nodeName`
// +kubebuilder:printcolumn:name="IP",type=string,JSONPath=`.status.interfaces[0].ipAddress`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="vCPUs",type=integer,JSONPath=`.spec.template.spec.resources.cpu`,priority=1
// +kubebuilder:printcolumn:name="Memory",type=string,JSONPath=`.spec.template.spec.resources.memory`,priority=1
// +kubebuilder:printcolumn:name="Image",type=string,JSONPath=`.spec.template.spec.image.source`,priority=1
// +kubebuilder:printcolumn:name="Devices",type=string,JSONPath=`.status.devices[*].model`,priority=1
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,priority=1
type VirtualMachine struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the desired VM.
	Spec VirtualMachineSpec `json:"spec"`
	// Status is the observed VM.
	// +optional
	Status VirtualMachineStatus `json:"status,omitempty"`
}

// VirtualMachineList is a list of VirtualMachines.
//
// +kubebuilder:object:root=true
type VirtualMachineList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualMachine `json:"items"`
}

func init() {
	SchemeBuilder.Register(&VirtualMachine{}, &VirtualMachineList{})
}
