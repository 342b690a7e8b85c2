package livemigration

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

func TestMigrateOptionsFromThePolicy(t *testing.T) {
	tgt := &novacronv1.Hypervisor{Spec: novacronv1.HypervisorSpec{URI: "qemu:///system?socket=/run/x", MigrationURI: "qemu+tls://node-2/system"}}
	v := &novacronv1.VirtualMachine{Spec: novacronv1.VirtualMachineSpec{MigrationPolicy: &novacronv1.MigrationPolicy{
		AllowLiveMigration: true, Compression: true, Encrypted: true, Bandwidth: "10Gbps"}}}
	o, err := migrateOptions(v, tgt)
	require.NoError(t, err)
	assert.Equal(t, "qemu+tls://node-2/system", o.DestURI, "the address peers use, not the operator's")
	assert.True(t, o.Compressed)
	assert.True(t, o.Encrypted)
	assert.True(t, o.CopyStorage)
	assert.Equal(t, uint64(1192), o.BandwidthMiBps, "10 Gbit/s is 1192 MiB/s")

	v.Spec.MigrationPolicy.Bandwidth = "8Mbps"
	o, err = migrateOptions(v, tgt)
	require.NoError(t, err)
	assert.Equal(t, uint64(1), o.BandwidthMiBps, "never 0, which would mean no limit")

	tgt.Spec.MigrationURI = ""
	v.Spec.MigrationPolicy.Bandwidth = "fast"
	_, err = migrateOptions(v, tgt)
	require.ErrorContains(t, err, "spec.migrationPolicy.bandwidth")
	v.Spec.MigrationPolicy = nil
	o, err = migrateOptions(v, tgt)
	require.NoError(t, err)
	assert.Equal(t, tgt.Spec.URI, o.DestURI)
	assert.Zero(t, o.BandwidthMiBps)
}
