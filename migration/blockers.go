package migration

import (
	"fmt"
	"strings"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

// Blockers says why the VM cannot be live-migrated now, each reason a
// sentence a person can act on; none means it can. snapshots are the names of
// its VirtualMachineSnapshots (SnapshotsByVM).
func Blockers(v *novacronv1.VirtualMachine, snapshots []string) []string {
	var out []string
	if v.Spec.MigrationPolicy == nil || !v.Spec.MigrationPolicy.AllowLiveMigration {
		out = append(out, fmt.Sprintf("VirtualMachine %s does not allow live migration; set its spec.migrationPolicy.allowLiveMigration: true", v.Name))
	}
	if v.Status.Phase != novacronv1.VMRunning {
		phase := string(v.Status.Phase)
		if phase == "" {
			phase = string(novacronv1.VMPending)
		}
		out = append(out, fmt.Sprintf("VirtualMachine %s is %s; only a Running VM can be live-migrated", v.Name, phase))
	}
	if len(v.Spec.Template.Spec.Devices) > 0 {
		out = append(out, fmt.Sprintf("VirtualMachine %s has passthrough devices (GPUs), whose state cannot move live; stop it and start it elsewhere instead", v.Name))
	}
	for _, n := range v.Spec.Template.Spec.Networks {
		if n.Type == novacronv1.NetworkTypeSRIOV {
			out = append(out, fmt.Sprintf("VirtualMachine %s has an sr-iov interface (%s), a passthrough device that cannot move live", v.Name, n.Name))
		}
	}
	// Internal snapshots live inside the VM's qcow2 disks, which a live
	// migration does not carry over (libvirt refuses it).
	if len(snapshots) > 0 {
		out = append(out, fmt.Sprintf("VirtualMachine %s has snapshots (%s), which live in its disks on node %s and cannot move with it; delete them first", v.Name, strings.Join(snapshots, ", "), v.Status.NodeName))
	}
	return out
}

// SnapshotsByVM names each VM's snapshots, by namespace/name of the VM.
func SnapshotsByVM(snaps []novacronv1.VirtualMachineSnapshot) map[string][]string {
	out := map[string][]string{}
	for _, s := range snaps {
		k := s.Namespace + "/" + s.Spec.VMName
		out[k] = append(out[k], s.Name)
	}
	return out
}
