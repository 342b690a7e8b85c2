package v1alpha1

// Every condition type, condition reason and event reason NovaCron writes is
// declared here, so clients, alerts and tests can match on them. A reason is a
// CamelCase word that says why a condition has its status (or why an event was
// recorded); the message beside it says what to do. Reasons that mean the same
// on several kinds are declared once.

// Condition types.
const (
	// ConditionReady is every kind's summary: True when the object does what
	// its spec asks (a VM runs as asked, a migration or snapshot succeeded).
	ConditionReady = "Ready"

	// VMConditionScheduled is True once the VM's launcher pod is bound to a
	// node; while it is False its message is the scheduler's reason per node.
	VMConditionScheduled = "Scheduled"
	// VMConditionHypervisorReachable is False while the VM's node's hypervisor
	// cannot be reached; nothing is done to the VM until it answers.
	VMConditionHypervisorReachable = "HypervisorReachable"
	// VMConditionHooksSucceeded is False when a lifecycle hook failed, naming it.
	VMConditionHooksSucceeded = "HooksSucceeded"
	// VMConditionCloudInit is True when the VM's cloud-init disk is attached.
	VMConditionCloudInit = "CloudInit"
	// VMConditionDevicesHealthy is False while a host device the VM holds
	// is unhealthy or gone from its node (novacron-node taints it); the
	// message names the device and the taint. VMs without devices have none.
	VMConditionDevicesHealthy = "DevicesHealthy"

	// HypervisorConditionReachable is True while NovaCron can talk to the
	// node's hypervisor.
	HypervisorConditionReachable = "Reachable"

	// PolicyConditionCompiled is True when the policy's Rego compiled; its
	// message holds the compiler's errors with line and column otherwise.
	PolicyConditionCompiled = "Compiled"

	// MigrationConditionSourceCleaned is True once a succeeded migration has
	// removed the VM's disks from the node it left (False while that is due).
	MigrationConditionSourceCleaned = "SourceCleaned"

	// RestoreConditionStoppedVM is True on a restore that stopped its VM
	// (spec.stopVM) and so starts it again when done. It is recorded before
	// the VM is stopped.
	RestoreConditionStoppedVM = "StoppedVM"
)

// Reasons several kinds share.
const (
	// ReasonPending: waiting for something that has not happened yet (a
	// launcher pod's placement; a succeeded migration's source disks still to
	// be removed).
	ReasonPending = "Pending"
	// ReasonWaiting: a migration, snapshot or restore waits for another
	// object; the message names it.
	ReasonWaiting = "Waiting"
	// ReasonSchedulingTimeout: no target node was found for a migration in
	// time; it failed and gave its slot back.
	ReasonSchedulingTimeout = "SchedulingTimeout"
	// ReasonRunning: a VM's domain runs; a migration's copy is under way.
	ReasonRunning = "Running"
	// ReasonInProgress: a snapshot is being taken, a restore is reverting.
	ReasonInProgress = "InProgress"
	// ReasonSucceeded: a migration or restore ended well.
	ReasonSucceeded = "Succeeded"
	// ReasonCancelled: a migration was cancelled (spec.cancel).
	ReasonCancelled = "Cancelled"
	// ReasonVMNotFound: the VirtualMachine a migration, snapshot or restore
	// names does not exist.
	ReasonVMNotFound = "VMNotFound"
	// ReasonUnsupported: the hypervisor cannot do what was asked (the libvirt
	// test driver takes no uploads and no snapshots of some kinds).
	ReasonUnsupported = "Unsupported"
	// ReasonHypervisorGone (event): the Hypervisor object of the node a VM or
	// snapshot lived on was deleted, so nothing can be removed there.
	ReasonHypervisorGone = "HypervisorGone"
	// ReasonWrongNode: a VM's launcher pod is on another node than the VM's
	// disks (event, the pod is replaced); a restore's snapshot is on another
	// node than its VM (condition, the restore fails).
	ReasonWrongNode = "WrongNode"
)

// Reasons of a VirtualMachine's conditions and events.
const (
	// ReasonScheduled: the launcher pod is bound (condition); the node is
	// recorded (event).
	ReasonScheduled = "Scheduled"
	// ReasonUnschedulable: the scheduler cannot place the launcher pod; the
	// message has every node's reason.
	ReasonUnschedulable = "Unschedulable"
	// ReasonQuotaExceeded: the namespace's ResourceQuota refused the
	// launcher pod; the message names the quota and what it lacks. The VM
	// waits for room (condition Scheduled, event).
	ReasonQuotaExceeded = "QuotaExceeded"
	// ReasonPaused: the domain is paused on the hypervisor.
	ReasonPaused = "Paused"
	// ReasonStopped: spec.running is false and the guest is off (condition);
	// the guest went off (event).
	ReasonStopped = "Stopped"
	// ReasonRestoring: a VirtualMachineRestore holds the VM's domain.
	ReasonRestoring = "Restoring"
	// ReasonHypervisorUnreachable: the VM's state is unknown while its node's
	// hypervisor cannot be reached (Ready condition and event).
	ReasonHypervisorUnreachable = "HypervisorUnreachable"
	// ReasonUnreachable and ReasonConnected are the HypervisorReachable
	// condition's two sides.
	ReasonUnreachable = "Unreachable"
	ReasonConnected   = "Connected"
	// ReasonURIRefused: the operator does not connect to spec.uri at all
	// (its --hypervisor-uris rules refuse it); the message says why.
	ReasonURIRefused = "URIRefused"
	// ReasonDomainMissing: the VM's domain, which NovaCron defined, is gone
	// from its node's hypervisor; it is not defined again until an admin
	// says so (clearing status.domainDefined).
	ReasonDomainMissing = "DomainMissing"
	// ReasonPreStartHookFailed, ReasonPreStartHookSucceeded and
	// ReasonPreStopHookFailed are the HooksSucceeded condition's reasons.
	ReasonPreStartHookFailed    = "PreStartHookFailed"
	ReasonPreStartHookSucceeded = "PreStartHookSucceeded"
	ReasonPreStopHookFailed     = "PreStopHookFailed"
	// ReasonAttached: the cloud-init disk is attached.
	ReasonAttached = "Attached"
	// ReasonDevicesHealthy and ReasonDeviceUnhealthy are the
	// DevicesHealthy condition's two sides (the latter also an event).
	ReasonDevicesHealthy  = "DevicesHealthy"
	ReasonDeviceUnhealthy = "DeviceUnhealthy"

	// Problems with a VM's spec, or with what it names, that retrying cannot
	// fix: the VM is Failed with one of these until its spec (or the image
	// catalog) changes.

	// ReasonImageNotFound: image.source is not in the image catalog.
	ReasonImageNotFound = "ImageNotFound"
	// ReasonImageNotOnNode: the image's volumes are not staged on the node.
	ReasonImageNotOnNode = "ImageNotOnNode"
	// ReasonPoolFull: the VM's disk is larger than its node's storage pool
	// has free.
	ReasonPoolFull = "PoolFull"
	// ReasonBadImageCatalog: the image catalog ConfigMap does not parse.
	ReasonBadImageCatalog = "BadImageCatalog"
	// ReasonNodeTooSmall: the VM is bigger than its node.
	ReasonNodeTooSmall = "NodeTooSmall"
	// ReasonNetworkNotFound: an sr-iov network has no usable
	// NetworkAttachmentDefinition.
	ReasonNetworkNotFound = "NetworkNotFound"
	// ReasonBadDeviceAssignment: the launcher pod's device assignment does
	// not parse.
	ReasonBadDeviceAssignment = "BadDeviceAssignment"
	// ReasonDevicesHeld: a device assigned to the VM is still another VM's
	// (one that is being stopped or deleted); the VM waits for it.
	ReasonDevicesHeld = "DevicesHeld"
	// ReasonDevicesNotAssigned: the VM's devices were not assigned (its pod
	// was not placed by novacron-scheduler).
	ReasonDevicesNotAssigned = "DevicesNotAssigned"
	// ReasonDomainConflict: the node has another VM's domain of this name.
	ReasonDomainConflict = "DomainConflict"
	// ReasonLauncherPodConflict: a pod of the launcher pod's name exists but
	// is not this VM's.
	ReasonLauncherPodConflict = "LauncherPodConflict"
	// ReasonUserDataSecretNotFound: userDataSecretRef names no Secret or key.
	ReasonUserDataSecretNotFound = "UserDataSecretNotFound"
	// ReasonBadCloudInit: the cloud-init data cannot be built.
	ReasonBadCloudInit = "BadCloudInit"
)

// Reasons of events on a VirtualMachine.
const (
	ReasonLauncherPodCreated = "LauncherPodCreated"
	ReasonDefined            = "Defined"
	ReasonStarted            = "Started"
	ReasonStopping           = "Stopping"
	// ReasonCrashed: the guest crashed; it is started again.
	ReasonCrashed = "Crashed"
	// ReasonDeleted: the VM's domain and disks were removed from its node; on
	// a migration, the migration was deleted (and so rolled back).
	ReasonDeleted = "Deleted"
	// ReasonLauncherPodReplaced: a pod claimed to be the VM's launcher pod
	// but was not the one NovaCron made; it was deleted.
	ReasonLauncherPodReplaced = "LauncherPodReplaced"
	// ReasonHypervisorReachable: the node's hypervisor answers again.
	ReasonHypervisorReachable = "HypervisorReachable"
	ReasonHookStarted         = "HookStarted"
	// ReasonHookRunning: an HTTP hook is being called, in the background.
	ReasonHookRunning = "HookRunning"
	// ReasonHookFailed: a lifecycle hook failed; the message says whether it
	// was obeyed or ignored.
	ReasonHookFailed = "HookFailed"
	// ReasonEvacuating: the VM's node is drained; a migration moves it off.
	ReasonEvacuating = "Evacuating"
	// ReasonMigrationSucceeded, ReasonMigrationFailed and
	// ReasonMigrationCancelled are "Migration" + the migration's final phase.
	// ReasonMigrationFailed is also the migration's own reason when the
	// hypervisor's migration failed or timed out (the VM stays on the source).
	ReasonMigrationSucceeded = "Migration" + string(MigrationSucceeded)
	ReasonMigrationFailed    = "Migration" + string(MigrationFailed)
	ReasonMigrationCancelled = "Migration" + string(MigrationCancelled)
	ReasonSnapshotTaken      = "SnapshotTaken"
	ReasonScheduledSnapshot  = "ScheduledSnapshot"
	// ReasonSnapshotRetired: a scheduled snapshot beyond the retention was
	// deleted.
	ReasonSnapshotRetired = "SnapshotRetired"
	ReasonRestored        = "Restored"
	// ReasonPolicyDryRun: a dryrun admission policy would have denied the
	// request.
	ReasonPolicyDryRun = "PolicyDryRun"
)

// Reasons of a VirtualMachineMigration's conditions and events.
const (
	// ReasonScheduling: waiting for novacron-scheduler to place the target pod.
	ReasonScheduling = "Scheduling"
	// ReasonTargetReady: the target pod is placed.
	ReasonTargetReady = "TargetReady"
	// ReasonMigrating (event): the live copy started.
	ReasonMigrating = "Migrating"
	// ReasonWaitingForTarget: the guest may already run on the target, which
	// cannot be reached; the migration waits rather than guess.
	ReasonWaitingForTarget = "WaitingForTarget"
	// ReasonNotMigratable: the VM cannot move live (the message says why).
	ReasonNotMigratable = "NotMigratable"
	// ReasonTargetPodGone: the target pod was deleted.
	ReasonTargetPodGone = "TargetPodGone"
	// ReasonTargetNotReady: the VM's disks could not be made on the target.
	ReasonTargetNotReady = "TargetNotReady"
	// ReasonInvalidPolicy: the VM's migrationPolicy cannot be applied.
	ReasonInvalidPolicy = "InvalidPolicy"
	// ReasonInterrupted: the operator restarted mid-migration while the VM
	// still ran on the source, so the migration was rolled back.
	ReasonInterrupted = "Interrupted"
	// ReasonRemoved: the source's stale disks were removed (SourceCleaned).
	ReasonRemoved = "Removed"
)

// Reasons of VirtualMachineSnapshot and VirtualMachineRestore conditions and
// events.
const (
	// ReasonReady: the snapshot is taken and can be restored.
	ReasonReady = "Ready"
	// ReasonTaken (event): the snapshot was taken.
	ReasonTaken = "Taken"
	// ReasonRetrying: a try failed for a reason that may pass; another follows.
	ReasonRetrying = "Retrying"
	// ReasonDomainNotFound: the VM has no domain on its node.
	ReasonDomainNotFound = "DomainNotFound"
	// ReasonSnapshotFailed: the snapshot failed for good (and a restore of it
	// fails with the same reason).
	ReasonSnapshotFailed = "SnapshotFailed"
	// ReasonStopVM: the restore stopped its VM and starts it again afterwards.
	ReasonStopVM = "StopVM"
	// ReasonStoppingVM (event): the restore is stopping its VM.
	ReasonStoppingVM = "StoppingVM"
	// ReasonSnapshotNotFound, ReasonWrongVM and ReasonVMRunning fail a restore.
	ReasonSnapshotNotFound = "SnapshotNotFound"
	ReasonWrongVM          = "WrongVM"
	ReasonVMRunning        = "VMRunning"
)

// Reasons of a VirtualMachinePolicy's Compiled condition.
const (
	ReasonCompiled     = "Compiled"
	ReasonCompileError = "CompileError"
)

// Reasons of a Hypervisor's events and drain state.
const (
	// ReasonEvacuationBlocked (event): a VM cannot leave a drained node.
	ReasonEvacuationBlocked = "EvacuationBlocked"
	// EvacuationCordoned and EvacuationMaintenance are
	// status.evacuation.reason: the node is cordoned, or tainted
	// TaintMaintenance.
	EvacuationCordoned    = "Cordoned"
	EvacuationMaintenance = "Maintenance"
)

// A VM's status.snapshot.lastResult.
const (
	ScheduleResultSucceeded  = "Succeeded"
	ScheduleResultFailed     = "Failed"
	ScheduleResultInProgress = "InProgress"
)

// Event actions (what NovaCron was doing when it recorded an event).
const (
	ActionSchedule = "Schedule"
	ActionStart    = "Start"
	ActionStop     = "Stop"
	ActionDelete   = "Delete"
	ActionConnect  = "Connect"
	ActionRun      = "Run"
	ActionMigrate  = "Migrate"
	ActionDrain    = "Drain"
	ActionSnapshot = "Snapshot"
	ActionRestore  = "Restore"
	ActionAdmit    = "Admit"
	ActionCompile  = "Compile"
)
