package migration

import (
	"testing"

	"github.com/stretchr/testify/assert"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

func TestBlockersSayWhyEachTime(t *testing.T) {
	v := &novacronv1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "team"}}
	v.Status.Phase, v.Status.NodeName = novacronv1.VMRunning, "node-1"
	v.Spec.MigrationPolicy = &novacronv1.MigrationPolicy{AllowLiveMigration: true}
	assert.Empty(t, Blockers(v, nil))

	v.Spec.Template.Spec.Devices = []novacronv1.Device{{Type: novacronv1.DeviceTypeGPU, Vendor: "nvidia", Count: 1}}
	v.Spec.Template.Spec.Networks = []novacronv1.Network{{Name: "data", Type: novacronv1.NetworkTypeSRIOV}}
	v.Status.Phase = novacronv1.VMStopped
	v.Spec.MigrationPolicy = nil
	why := Blockers(v, []string{"nightly"})
	assert.Len(t, why, 5)
	assert.Contains(t, why[0], "allowLiveMigration: true")
	assert.Contains(t, why[1], "is Stopped; only a Running VM")
	assert.Contains(t, why[2], "passthrough devices (GPUs)")
	assert.Contains(t, why[3], "sr-iov interface (data)")
	assert.Contains(t, why[4], "has snapshots (nightly), which live in its disks on node node-1")
}

func TestSnapshotsByVM(t *testing.T) {
	snap := func(ns, name, vm string) novacronv1.VirtualMachineSnapshot {
		return novacronv1.VirtualMachineSnapshot{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: novacronv1.VirtualMachineSnapshotSpec{VMName: vm}}
	}
	got := SnapshotsByVM([]novacronv1.VirtualMachineSnapshot{snap("a", "s1", "web"), snap("a", "s2", "web"), snap("b", "s3", "web"), snap("a", "s4", "db")})
	assert.Equal(t, map[string][]string{"a/web": {"s1", "s2"}, "b/web": {"s3"}, "a/db": {"s4"}}, got, "a VM is its namespace and name")
}
