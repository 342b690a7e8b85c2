package livemigration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/migration"
	"github.com/novacron/operator/operator/domain"
	"github.com/novacron/operator/operator/hypervisors"
	"github.com/novacron/operator/operator/launcher"
	"github.com/novacron/operator/operator/metrics"
	"github.com/novacron/operator/operator/provider"
)

// begin checks the VM can move and the limits allow it, then claims the VM.
func (r *Reconciler) begin(ctx context.Context, m *novacronv1.VirtualMachineMigration, v *novacronv1.VirtualMachine) (ctrl.Result, error) {
	if st := v.Status.MigrationState; st != nil && st.MigrationName != m.Name {
		return r.wait(ctx, m, fmt.Sprintf("migration %s of VirtualMachine %s is under way", st.MigrationName, v.Name))
	}
	var snaps novacronv1.VirtualMachineSnapshotList
	if err := r.Client.List(ctx, &snaps, client.InNamespace(v.Namespace)); err != nil {
		return ctrl.Result{}, err
	}
	if why := migration.Blockers(v, migration.SnapshotsByVM(snaps.Items)[v.Namespace+"/"+v.Name]); len(why) > 0 {
		return r.finish(ctx, m, nil, novacronv1.MigrationFailed, novacronv1.ReasonNotMigratable, strings.Join(why, "; "))
	}
	if res, claimed, err := r.claimSlot(ctx, m, v); !claimed || err != nil {
		return res, err
	}
	if err := r.setVMState(ctx, v, &novacronv1.MigrationState{MigrationName: m.Name, SourceNode: m.Status.SourceNode, Phase: m.Status.Phase}); err != nil {
		return ctrl.Result{}, err
	}
	r.Recorder.Eventf(m, nil, corev1.EventTypeNormal, novacronv1.ReasonScheduling, novacronv1.ActionMigrate, "moving VirtualMachine %s off node %s", v.Name, m.Status.SourceNode)
	return r.schedule(ctx, m, v)
}

// claimSlot records m Scheduling (its slot taken) unless the limits say it
// must wait.
func (r *Reconciler) claimSlot(ctx context.Context, m *novacronv1.VirtualMachineMigration, v *novacronv1.VirtualMachine) (ctrl.Result, bool, error) {
	r.slots.Lock()
	defer r.slots.Unlock()
	why, err := r.overLimits(ctx, m, v.Status.NodeName)
	if err != nil {
		return ctrl.Result{}, false, err
	}
	if why != "" {
		res, err := r.wait(ctx, m, why)
		return res, false, err
	}
	r.setPhase(ctx, m, novacronv1.MigrationScheduling)
	now := metav1.Now()
	m.Status.SchedulingStartTime = &now
	m.Status.SourceNode = v.Status.NodeName
	m.Status.TargetPod = fmt.Sprintf("%s-migration-%s", v.Name, string(m.UID)[:8])
	m.Status.ObservedGeneration = m.Generation
	setCondition(m, metav1.ConditionFalse, novacronv1.ReasonScheduling, "waiting for novacron-scheduler to place the target pod "+m.Status.TargetPod)
	return ctrl.Result{}, true, r.Client.Status().Update(ctx, m)
}

// overLimits says why m must wait for other migrations, or "". A waiting
// migration asks every poll: the cache answers, and only a free slot there is
// confirmed with the API server (two migrations must not both take the last
// one on a cache that is behind), so waiting costs no API requests.
func (r *Reconciler) overLimits(ctx context.Context, m *novacronv1.VirtualMachineMigration, source string) (string, error) {
	var all novacronv1.VirtualMachineMigrationList
	if err := r.Client.List(ctx, &all); err != nil {
		return "", err
	}
	if why := migration.OverLimits(all.Items, m, source, r.Limits); why != "" {
		return why, nil
	}
	if err := r.APIReader.List(ctx, &all); err != nil {
		return "", err
	}
	return migration.OverLimits(all.Items, m, source, r.Limits), nil
}

// schedule makes the target pod and waits for the scheduler to bind it.
func (r *Reconciler) schedule(ctx context.Context, m *novacronv1.VirtualMachineMigration, v *novacronv1.VirtualMachine) (ctrl.Result, error) {
	pod, err := r.targetPod(ctx, m)
	if errors.Is(err, errNotOurs) {
		return r.replaceForeignPod(ctx, m, pod)
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	if pod == nil {
		pod = buildTargetPod(v, m, r.Launcher)
		if err := r.Client.Create(ctx, pod); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return ctrl.Result{RequeueAfter: r.Poll}, nil // the cache has not seen it yet
			}
			return ctrl.Result{}, fmt.Errorf("creating target pod %s: %w", pod.Name, err)
		}
		// Recorded at once: only this pod is the migration's, and
		// novacron-scheduler places only pods their VM records.
		m.Status.TargetPodUID = pod.UID
		if err := r.Client.Status().Update(ctx, m); err != nil {
			return ctrl.Result{}, err
		}
	}
	if st := v.Status.MigrationState; st == nil || st.TargetPodUID != pod.UID {
		if err := r.setVMState(ctx, v, &novacronv1.MigrationState{MigrationName: m.Name, SourceNode: m.Status.SourceNode,
			TargetPodUID: pod.UID, Phase: m.Status.Phase}); err != nil {
			return ctrl.Result{}, err
		}
	}
	if pod.Spec.NodeName == "" {
		msg := "waiting for novacron-scheduler to place the target pod " + pod.Name
		if reason, why := launcher.SchedulingMessage(pod); reason != novacronv1.ReasonPending && why != "" {
			msg = "no target yet: " + why
		}
		if m.Status.SchedulingStartTime == nil {
			// Under way since before the field was recorded: the wait counts from now.
			now := metav1.Now()
			m.Status.SchedulingStartTime = &now
			return ctrl.Result{RequeueAfter: r.Poll}, r.Client.Status().Update(ctx, m)
		}
		if waited := time.Since(m.Status.SchedulingStartTime.Time); waited >= r.Limits.SchedulingTimeout {
			return r.rollback(ctx, m, novacronv1.MigrationFailed, novacronv1.ReasonSchedulingTimeout,
				fmt.Sprintf("no target node within %s, so the migration gave its slot back (%s)", r.Limits.SchedulingTimeout, msg))
		}
		if setCondition(m, metav1.ConditionFalse, novacronv1.ReasonScheduling, msg) {
			return ctrl.Result{RequeueAfter: r.Poll}, r.Client.Status().Update(ctx, m)
		}
		return ctrl.Result{RequeueAfter: r.Poll}, nil
	}
	m.Status.TargetNode = pod.Spec.NodeName
	r.setPhase(ctx, m, novacronv1.MigrationTargetReady)
	setCondition(m, metav1.ConditionFalse, novacronv1.ReasonTargetReady, "target pod placed on node "+pod.Spec.NodeName)
	if err := r.Client.Status().Update(ctx, m); err != nil {
		return ctrl.Result{}, err
	}
	r.Recorder.Eventf(m, nil, corev1.EventTypeNormal, novacronv1.ReasonTargetReady, novacronv1.ActionMigrate, "target node %s", pod.Spec.NodeName)
	return r.start(ctx, m, v)
}

// buildTargetPod is the VM's launcher pod for the target node: the VM's own
// requests and placement, marked so the scheduler never picks the source
// node, narrowed by the migration's target node or selector.
func buildTargetPod(v *novacronv1.VirtualMachine, m *novacronv1.VirtualMachineMigration, cfg launcher.Config) *corev1.Pod {
	pod := launcher.BuildPod(v, cfg, nil)
	pod.Name = m.Status.TargetPod
	pod.Labels[novacronv1.LabelMigrationSource] = m.Status.SourceNode
	pod.Labels[novacronv1.LabelMigration] = m.Name
	// The VM's own pod is pinned to its node; this one goes elsewhere.
	pod.Spec.Affinity = v.Spec.Template.Spec.Affinity.DeepCopy()
	if pod.Spec.NodeSelector == nil {
		pod.Spec.NodeSelector = map[string]string{}
	}
	for k, val := range m.Spec.NodeSelector {
		pod.Spec.NodeSelector[k] = val
	}
	if m.Spec.TargetNodeName != "" {
		launcher.PinToNode(pod, m.Spec.TargetNodeName)
	}
	return pod
}

// errNotOurs is a pod of the target pod's name that the migration did not
// make (someone else's, or one whose record was lost before it was written).
var errNotOurs = errors.New("not the target pod the migration made")

// targetPod is the migration's target pod, nil while there is none.
func (r *Reconciler) targetPod(ctx context.Context, m *novacronv1.VirtualMachineMigration) (*corev1.Pod, error) {
	pod := &corev1.Pod{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: m.Status.TargetPod}, pod); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	if pod.UID != m.Status.TargetPodUID {
		return pod, errNotOurs
	}
	return pod, nil
}

// replaceForeignPod deletes a pod of the target pod's name that the migration
// did not make; its own follows once that is gone.
func (r *Reconciler) replaceForeignPod(ctx context.Context, m *novacronv1.VirtualMachineMigration, pod *corev1.Pod) (ctrl.Result, error) {
	if pod.DeletionTimestamp.IsZero() {
		r.Recorder.Eventf(m, nil, corev1.EventTypeWarning, novacronv1.ReasonLauncherPodReplaced, novacronv1.ActionMigrate,
			"pod %s is not the target pod the migration made; deleting it and making a new one", pod.Name)
		if err := r.Client.Delete(ctx, pod, client.Preconditions{UID: &pod.UID}); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, err
		}
	}
	return ctrl.Result{RequeueAfter: r.Poll}, nil
}

// start makes the VM's disks on the target, records the migration Running and
// starts the migration call.
func (r *Reconciler) start(ctx context.Context, m *novacronv1.VirtualMachineMigration, v *novacronv1.VirtualMachine) (ctrl.Result, error) {
	pod, err := r.targetPod(ctx, m)
	if errors.Is(err, errNotOurs) || (err == nil && pod == nil) {
		return r.rollback(ctx, m, novacronv1.MigrationFailed, novacronv1.ReasonTargetPodGone, "the target pod "+m.Status.TargetPod+" was deleted or replaced")
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	tgtObj, tgt, err := hypervisors.ForNode(ctx, r.Client, r.Hypervisors, m.Status.TargetNode)
	if err != nil {
		return ctrl.Result{}, err
	}
	srcObj, src, err := hypervisors.ForNode(ctx, r.Client, r.Hypervisors, m.Status.SourceNode)
	if err != nil {
		return ctrl.Result{}, err
	}
	if err := r.adoptLegacyVolumes(ctx, v, srcObj, src); err != nil {
		return ctrl.Result{}, err
	}
	// Migratable VMs have no devices (migration.Blockers), so their target
	// pods claim none.
	var assigned novacronv1.DeviceAssignment
	if len(pod.Spec.ResourceClaims) > 0 {
		err = fmt.Errorf("target pod %s claims devices, which a migratable VM has none of", pod.Name)
	}
	if err == nil {
		err = r.Targets.PrepareTarget(ctx, v, assigned, tgtObj, tgt)
	}
	if err != nil {
		return r.rollback(ctx, m, novacronv1.MigrationFailed, novacronv1.ReasonTargetNotReady, fmt.Sprintf("preparing node %s: %v", m.Status.TargetNode, err))
	}
	opts, err := migrateOptions(v, tgtObj)
	if err != nil {
		return r.rollback(ctx, m, novacronv1.MigrationFailed, novacronv1.ReasonInvalidPolicy, err.Error())
	}
	// Recorded before the call: a restarted operator then knows to look at
	// both nodes.
	now := metav1.Now()
	r.setPhase(ctx, m, novacronv1.MigrationRunning)
	m.Status.StartTime = &now
	setCondition(m, metav1.ConditionFalse, novacronv1.ReasonRunning, fmt.Sprintf("migrating live from node %s to node %s", m.Status.SourceNode, m.Status.TargetNode))
	if err := r.Client.Status().Update(ctx, m); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.setVMState(ctx, v, &novacronv1.MigrationState{MigrationName: m.Name, SourceNode: m.Status.SourceNode, TargetNode: m.Status.TargetNode,
		TargetPodUID: m.Status.TargetPodUID, Phase: m.Status.Phase}); err != nil {
		return ctrl.Result{}, err
	}
	timeout := migration.Timeout(v.Spec.Template.Spec.Resources.Memory.Value(), r.TimeoutPerGiB, r.MinTimeout)
	name := domain.DomainName(v)
	r.jobs.start(m, timeout, fmt.Errorf("did not complete within %s (%s per GiB of memory); aborted", timeout, r.TimeoutPerGiB),
		func(ctx context.Context) error { return src.Migrate(ctx, name, opts) },
		func(ctx context.Context) error { return src.AbortMigration(ctx, name) })
	metrics.MigrationStarted()
	r.Recorder.Eventf(m, nil, corev1.EventTypeNormal, novacronv1.ReasonMigrating, novacronv1.ActionMigrate, "migrating live from node %s to node %s", m.Status.SourceNode, m.Status.TargetNode)
	return ctrl.Result{RequeueAfter: r.Poll}, nil
}

// adoptLegacyVolumes records, before the target's disks are made, that a VM
// from before UID volume naming keeps its old volume names: the target's
// disks must have the names the source's domain uses.
func (r *Reconciler) adoptLegacyVolumes(ctx context.Context, v *novacronv1.VirtualMachine, srcObj *novacronv1.Hypervisor, src provider.Hypervisor) error {
	if v.Status.LegacyVolumeNames {
		return nil
	}
	_, ours, err := domain.Owner(ctx, src, v)
	if err != nil {
		return err
	}
	adopted := v.DeepCopy()
	if err := domain.AdoptLegacyVolumes(ctx, adopted, ours, hypervisors.Pool(srcObj), src); err != nil || !adopted.Status.LegacyVolumeNames {
		return err
	}
	return r.patchVM(ctx, v, func() { v.Status.LegacyVolumeNames = true })
}

// migrateOptions turns the VM's migration policy into libvirt's terms.
func migrateOptions(v *novacronv1.VirtualMachine, tgt *novacronv1.Hypervisor) (provider.MigrateOptions, error) {
	o := provider.MigrateOptions{DestURI: tgt.Spec.MigrationURI, CopyStorage: true, AutoConverge: true}
	if o.DestURI == "" {
		o.DestURI = tgt.Spec.URI
	}
	if p := v.Spec.MigrationPolicy; p != nil {
		o.Compressed, o.Encrypted = p.Compression, p.Encrypted
		if p.Bandwidth != "" {
			bytesPerSecond, err := novacronv1.ParseBandwidth(p.Bandwidth)
			if err != nil {
				return o, fmt.Errorf("spec.migrationPolicy.bandwidth: %w", err)
			}
			// libvirt takes MiB/s.
			o.BandwidthMiBps = max(1, uint64(bytesPerSecond/(1<<20)))
		}
	}
	return o, nil
}

// follow reports a running migration's progress and finishes it when the call
// returns; with no call in flight (the operator restarted) it resolves the
// truth from both hypervisors.
func (r *Reconciler) follow(ctx context.Context, m *novacronv1.VirtualMachineMigration, v *novacronv1.VirtualMachine) (ctrl.Result, error) {
	j := r.jobs.get(m.UID)
	if j == nil {
		return r.resolve(ctx, m, v)
	}
	select {
	case <-j.done:
	default:
		// A target that stops answering cannot finish the migration; libvirt
		// may take long to notice, so abort it now.
		if why := r.targetLost(ctx, m); why != nil {
			r.jobs.interrupt(j, why)
			return r.follow(ctx, m, v)
		}
		if err := r.reportProgress(ctx, m, domain.DomainName(v)); err != nil {
			return ctrl.Result{}, err
		}
		return ctrl.Result{RequeueAfter: r.Poll}, nil
	}
	r.jobs.forget(m.UID)
	if j.err != nil {
		phase, reason, msg := novacronv1.MigrationFailed, novacronv1.ReasonMigrationFailed, j.err.Error()
		if errors.Is(j.err, errCancelled) {
			phase, reason = novacronv1.MigrationCancelled, novacronv1.ReasonCancelled
		} else if j.why == nil {
			// The source's libvirtd may have noticed a lost target before our
			// probe did, and says only that its socket closed: name the node.
			if lost := r.targetLost(ctx, m); lost != nil {
				msg = fmt.Sprintf("%v (the source's libvirtd: %v)", lost, j.err)
			}
		}
		return r.rollback(ctx, m, phase, reason, msg)
	}
	return r.succeed(ctx, m, v)
}

// reportProgress copies the source's figures of a running migration job into
// the migration's status.
func (r *Reconciler) reportProgress(ctx context.Context, m *novacronv1.VirtualMachineMigration, name string) error {
	_, src, err := hypervisors.ForNode(ctx, r.Client, r.Hypervisors, m.Status.SourceNode)
	if err != nil {
		return nil // the next poll looks again
	}
	p, err := src.MigrationProgress(ctx, name)
	if err != nil || p.Completed {
		return nil
	}
	m.Status.Progress = progress(p)
	return r.Client.Status().Update(ctx, m)
}

func progress(p provider.MigrationProgress) *novacronv1.MigrationProgress {
	return &novacronv1.MigrationProgress{
		DataTotalBytes: p.DataTotal, DataProcessedBytes: p.DataProcessed, DataRemainingBytes: p.DataRemaining,
		DirtyRateBytesPerSecond: p.DirtyRate, Iterations: p.Iterations,
		ElapsedMilliseconds: p.Elapsed.Milliseconds(), DowntimeMilliseconds: p.Downtime.Milliseconds(),
	}
}

// succeed hands the VM over to the target: its node and launcher pod, then
// removes what it left on the source.
func (r *Reconciler) succeed(ctx context.Context, m *novacronv1.VirtualMachineMigration, v *novacronv1.VirtualMachine) (ctrl.Result, error) {
	_, tgt, err := hypervisors.ForNode(ctx, r.Client, r.Hypervisors, m.Status.TargetNode)
	if err != nil {
		return ctrl.Result{}, err
	}
	if p, err := tgt.MigrationProgress(ctx, domain.DomainName(v)); err == nil && p.Completed {
		m.Status.Progress = progress(p)
	}
	oldPod := v.Status.LauncherPod
	if err := r.handOver(ctx, v, m); err != nil {
		return ctrl.Result{}, err
	}
	if oldPod != "" && oldPod != m.Status.TargetPod {
		if err := r.Client.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: m.Namespace, Name: oldPod}}); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, err
		}
	}
	msg := fmt.Sprintf("VirtualMachine %s now runs on node %s", v.Name, m.Status.TargetNode)
	if p := m.Status.Progress; p != nil {
		msg += fmt.Sprintf(" (downtime %d ms)", p.DowntimeMilliseconds)
	}
	// The source's stale disks go after the VM is handed over, recorded so
	// that a restart still removes them.
	meta.SetStatusCondition(&m.Status.Conditions, metav1.Condition{Type: novacronv1.MigrationConditionSourceCleaned, Status: metav1.ConditionFalse,
		Reason: novacronv1.ReasonPending, Message: "the VM's old disks on node " + m.Status.SourceNode + " are to be removed", ObservedGeneration: m.Generation})
	res, err := r.finish(ctx, m, v, novacronv1.MigrationSucceeded, novacronv1.ReasonSucceeded, msg)
	if err != nil {
		return res, err
	}
	return r.cleanSource(ctx, m, v)
}

// cleanSource removes what a succeeded migration left on the source: its
// disks, and the paused guest itself when libvirt could not confirm the
// switch-over there (the target lost on the way).
func (r *Reconciler) cleanSource(ctx context.Context, m *novacronv1.VirtualMachineMigration, v *novacronv1.VirtualMachine) (ctrl.Result, error) {
	srcObj, src, err := hypervisors.ForNode(ctx, r.Client, r.Hypervisors, m.Status.SourceNode)
	if err != nil {
		return ctrl.Result{}, err
	}
	if err := removeDomain(ctx, srcObj, src, v); err != nil {
		return ctrl.Result{}, err
	}
	meta.SetStatusCondition(&m.Status.Conditions, metav1.Condition{Type: novacronv1.MigrationConditionSourceCleaned, Status: metav1.ConditionTrue,
		Reason: novacronv1.ReasonRemoved, Message: "the VM's old disks on node " + m.Status.SourceNode + " were removed", ObservedGeneration: m.Generation})
	return ctrl.Result{}, r.Client.Status().Update(ctx, m)
}

// removeDomain takes the VM's domain and disks off one node. A domain of
// the VM's name with another UUID is another VM's: it stays, and so do
// disks under names it may use (the old, name-only ones).
func removeDomain(ctx context.Context, hvObj *novacronv1.Hypervisor, hv provider.Hypervisor, v *novacronv1.VirtualMachine) error {
	_, ours, err := domain.Owner(ctx, hv, v)
	switch {
	case errors.Is(err, provider.ErrNotFound):
	case err != nil:
		return err
	case !ours && v.Status.LegacyVolumeNames:
		return nil
	case ours:
		if err := hv.Undefine(ctx, domain.DomainName(v)); err != nil {
			return err
		}
	}
	return domain.DeleteVolumes(ctx, v, hypervisors.Pool(hvObj), hv)
}
