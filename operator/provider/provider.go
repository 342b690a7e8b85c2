// Package provider is the operator's view of a node hypervisor: what the VM
// controller (and later migration and snapshots) asks of it, independent of the
// hypervisor API behind it. The libvirt implementation is in ./libvirt.
package provider

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned (wrapped) when a domain or volume does not exist.
var ErrNotFound = errors.New("not found")

// ErrConflict is returned (wrapped) when the hypervisor holds a domain of the
// same name that belongs to something else (another UUID).
var ErrConflict = errors.New("conflict")

// ErrUnsupported is returned (wrapped) when the hypervisor cannot do what was
// asked (the libvirt test driver cannot receive volume uploads, for one).
var ErrUnsupported = errors.New("not supported by this hypervisor")

// ErrNoSpace is returned (wrapped) when a storage pool has less free space
// than a new volume's capacity: the volume is not made, as thin disks that
// outgrow their pool stop every guest on it.
var ErrNoSpace = errors.New("not enough free space in the storage pool")

// ErrUnreachable is returned (wrapped) when the hypervisor cannot be reached.
// Callers must not assume anything about the domains on it.
var ErrUnreachable = errors.New("hypervisor unreachable")

// ErrRefused is returned (wrapped, with ErrUnreachable) for a hypervisor URI
// the operator's rules do not allow: nothing was dialed, and nothing will be
// until the URI or the rules change.
var ErrRefused = errors.New("refused by the operator's hypervisor URI rules")

// Connector hands out the Hypervisor for a URI, sharing one connection per URI.
type Connector interface {
	Hypervisor(ctx context.Context, uri string) (Hypervisor, error)
}

// Hypervisor is one node's hypervisor. Every method is idempotent: calling it
// again after a crash, with the same arguments, converges on the same state.
type Hypervisor interface {
	// Info describes the host.
	Info(ctx context.Context) (HostInfo, error)

	// EnsureVolume creates the volume in the pool unless it exists, and returns
	// its path on the host. A new volume larger than the pool's free space is
	// ErrNoSpace.
	EnsureVolume(ctx context.Context, v Volume) (string, error)
	// UploadVolume writes data as the whole content of a raw volume, creating or
	// replacing it, and returns its path on the host.
	UploadVolume(ctx context.Context, pool, name string, data []byte) (string, error)
	// DeleteVolume removes the volume; a missing one is not an error.
	DeleteVolume(ctx context.Context, pool, name string) error
	// VolumePath returns the path of an existing volume, or ErrNotFound.
	VolumePath(ctx context.Context, pool, name string) (string, error)

	// Define creates the domain, or updates its persistent definition.
	Define(ctx context.Context, d Domain) error
	// Start boots a defined domain, or resumes a paused one; starting a
	// running one is not an error.
	Start(ctx context.Context, name string) error
	// Shutdown asks the guest to power off (ACPI) and waits up to grace for it,
	// then forces it off. A domain already off is not an error.
	Shutdown(ctx context.Context, name string, grace time.Duration) error
	// Undefine forces the domain off and removes its definition; a missing
	// domain is not an error.
	Undefine(ctx context.Context, name string) error
	// Domains lists the names of the domains defined on the host.
	Domains(ctx context.Context) ([]string, error)
	// State reports the domain's state, or ErrNotFound.
	State(ctx context.Context, name string) (DomainState, error)
	// UUID is the domain's UUID (NovaCron gives a VM's domain the VM's UID),
	// or ErrNotFound.
	UUID(ctx context.Context, name string) (string, error)
	// Stats reports the domain's resource use.
	Stats(ctx context.Context, name string) (Stats, error)

	// CreateSnapshot takes a snapshot of the domain's disks, with its memory
	// state when it runs; a snapshot of that name already there is returned
	// as it is.
	CreateSnapshot(ctx context.Context, domain string, req SnapshotRequest) (Snapshot, error)
	// RevertSnapshot puts the domain back to the snapshot; running says
	// whether it should run afterwards (from the snapshot's memory state when
	// it has one) or be left off.
	RevertSnapshot(ctx context.Context, domain, snapshot string, running bool) error
	// DeleteSnapshot removes the snapshot; a missing one (or domain) is not an
	// error.
	DeleteSnapshot(ctx context.Context, domain, snapshot string) error
	// Thaw thaws the guest's file systems, should a quiesced snapshot whose
	// call was given up on (or lost its connection) have left them frozen.
	// A guest that is not frozen, off, gone or without an agent is not an
	// error.
	Thaw(ctx context.Context, domain string) error
	// Snapshots lists the names of the domain's snapshots.
	Snapshots(ctx context.Context, domain string) ([]string, error)

	// Migrate moves the running domain live to the hypervisor at
	// o.DestURI (peer to peer: this hypervisor dials it), defining it there
	// and undefining it here on success. It returns when the migration
	// ended; on failure the domain still runs here.
	Migrate(ctx context.Context, domain string, o MigrateOptions) error
	// MigrationProgress reports the domain's running migration job, or the
	// completed one's final figures (Completed true).
	MigrationProgress(ctx context.Context, domain string) (MigrationProgress, error)
	// AbortMigration aborts the domain's running migration; none running is
	// not an error.
	AbortMigration(ctx context.Context, domain string) error
}

// MigrateOptions shape one live migration.
type MigrateOptions struct {
	// DestURI is the destination hypervisor as the source's daemon reaches it.
	DestURI string
	// Compressed, Encrypted (TLS; refused where it is not set up),
	// AutoConverge and PostCopy switch those libvirt features on.
	Compressed, Encrypted, AutoConverge, PostCopy bool
	// BandwidthMiBps caps the transfer (0: no cap).
	BandwidthMiBps uint64
	// MaxDowntime is the longest pause allowed at the switch-over (0: libvirt's).
	MaxDowntime time.Duration
	// CopyStorage copies the disks' top layers to the destination, whose
	// disks already exist there on the same backing images.
	CopyStorage bool
}

// MigrationProgress is a migration job's figures.
type MigrationProgress struct {
	Completed                bool
	DataTotal, DataProcessed int64
	DataRemaining, DirtyRate int64
	Iterations               int64
	Elapsed, Downtime        time.Duration
}

// SnapshotRequest asks for one snapshot of a domain.
type SnapshotRequest struct {
	Name        string
	Description string
	// DiskOnly leaves the memory state out.
	DiskOnly bool
	// Quiesce freezes the guest's file systems through its guest agent while
	// the snapshot is taken, when the agent answers.
	Quiesce bool
}

// Snapshot is a snapshot on the hypervisor.
type Snapshot struct {
	Name         string
	CreationTime time.Time
	// IncludesMemory is true when the domain ran and its memory was saved.
	IncludesMemory bool
	// Quiesced is true when the guest agent froze the file systems for it;
	// only known to the call that took it (false when read back later).
	Quiesced bool
	// SizeBytes is the memory state saved plus what the disks hold, as far
	// as the hypervisor reports it.
	SizeBytes int64
}

// DomainState is a domain's run state.
type DomainState string

// The states a domain can be in.
const (
	StateRunning  DomainState = "Running"
	StatePaused   DomainState = "Paused"
	StateShutdown DomainState = "ShuttingDown"
	StateShutoff  DomainState = "Shutoff"
	StateCrashed  DomainState = "Crashed"
	StateOther    DomainState = "Other"
)

// HostInfo describes a hypervisor host.
type HostInfo struct {
	CPUs        int32
	MemoryBytes int64
	CPUModel    string
	NUMANodes   int32
	Version     string
}

// Volume is a disk volume in a storage pool.
type Volume struct {
	Pool          string
	Name          string
	CapacityBytes int64
	// Format of the volume, qcow2 or raw.
	Format string
	// BackingVolume, when set, makes the volume a copy-on-write overlay of that
	// volume in the same pool (the VM's image).
	BackingVolume string
	BackingFormat string
}

// Domain is the hypervisor-neutral definition of a VM.
type Domain struct {
	Name string
	// Type forces the virtualization type (kvm, qemu); empty lets the
	// hypervisor pick the best it has.
	Type string
	// UUID is the VM object's UID, so one VM can only ever be one domain.
	UUID        string
	VCPUs       int32
	MemoryBytes int64
	Disks       []Disk
	NICs        []NIC
	// HostDevices are PCI addresses passed through whole (GPUs).
	HostDevices []string
	// SerialLogPath receives the guest's serial console.
	SerialLogPath string
	// Description is shown by the hypervisor's tools (virsh dominfo).
	Description string
	// Kernel, Initrd and Cmdline, when Kernel is set, boot the domain directly
	// from a kernel on the host.
	Kernel, Initrd, Cmdline string
}

// Disk is a disk or CD-ROM of a domain.
type Disk struct {
	Path     string
	Format   string
	CDROM    bool
	ReadOnly bool
}

// NIC is a network interface of a domain.
type NIC struct {
	MAC string
	// Network is the hypervisor network a virtio NIC attaches to.
	Network string
	// PCIAddress, when set, passes an SR-IOV VF through instead.
	PCIAddress string
	// CleanTraffic lets only the NIC's own MAC and IPv4 address out of a
	// virtio NIC (libvirt's clean-traffic nwfilter): IP when it is static,
	// otherwise the address its DHCP server gave it.
	CleanTraffic bool
	IP           string
}

// Stats is a domain's resource use.
type Stats struct {
	// CPUTime is the total CPU time the domain has used.
	CPUTime time.Duration
	// MemoryUsedBytes is the guest's memory in use, or its size when the guest
	// does not report it.
	MemoryUsedBytes int64
}
