// Package providertest is the provider.Hypervisor contract as tests: every
// provider (libvirt on its test driver, the in-memory fake) runs them, so the
// fake the controllers' unit tests use behaves as the real one does.
package providertest

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/novacron/operator/operator/provider"
)

// Domain is the domain the contract defines: 2 vCPUs, 512 MiB, one NIC.
func Domain(name string) provider.Domain {
	return provider.Domain{Name: name, UUID: "6a1b8a3e-0c52-4b2e-9d7c-111111111111", VCPUs: 2, MemoryBytes: 512 << 20,
		NICs: []provider.NIC{{MAC: "52:54:00:00:00:01", Network: "default"}}, SerialLogPath: "/tmp/serial.log"}
}

func rootDisk(image string) provider.Volume {
	return provider.Volume{Pool: "default", Name: "vm-root.qcow2", CapacityBytes: 10 << 30, Format: "qcow2", BackingVolume: image, BackingFormat: "qcow2"}
}

// Lifecycle checks a domain's life on h, whose pool "default" holds the
// volume image: every call idempotent, a missing domain or volume
// ErrNotFound, another VM's same-named domain ErrConflict.
func Lifecycle(t *testing.T, h provider.Hypervisor, image string) {
	ctx := context.Background()
	path, err := h.EnsureVolume(ctx, rootDisk(image))
	require.NoError(t, err)
	again, err := h.EnsureVolume(ctx, rootDisk(image))
	require.NoError(t, err)
	assert.Equal(t, path, again, "EnsureVolume is idempotent")

	_, err = h.State(ctx, "vm")
	assert.ErrorIs(t, err, provider.ErrNotFound)
	_, err = h.UUID(ctx, "vm")
	assert.ErrorIs(t, err, provider.ErrNotFound)

	d := Domain("vm")
	d.Disks = []provider.Disk{{Path: path, Format: "qcow2"}}
	require.NoError(t, h.Define(ctx, d))
	require.NoError(t, h.Define(ctx, d), "defining again updates the definition")
	other := d
	other.UUID = "6a1b8a3e-0c52-4b2e-9d7c-222222222222"
	assert.ErrorIs(t, h.Define(ctx, other), provider.ErrConflict, "a same-named domain of another VM is not overwritten")
	uuid, err := h.UUID(ctx, "vm")
	require.NoError(t, err)
	assert.Equal(t, d.UUID, uuid)
	st, err := h.State(ctx, "vm")
	require.NoError(t, err)
	assert.Equal(t, provider.StateShutoff, st)

	require.NoError(t, h.Start(ctx, "vm"))
	require.NoError(t, h.Start(ctx, "vm"), "starting a running domain is not an error")
	st, _ = h.State(ctx, "vm")
	assert.Equal(t, provider.StateRunning, st)

	assert.NoError(t, h.Thaw(ctx, "vm"), "thawing a guest that is not frozen")
	assert.NoError(t, h.Thaw(ctx, "no-such-vm"), "or one that is gone")

	stats, err := h.Stats(ctx, "vm")
	require.NoError(t, err)
	assert.Equal(t, int64(512<<20), stats.MemoryUsedBytes)

	require.NoError(t, h.Shutdown(ctx, "vm", 5*time.Second))
	st, _ = h.State(ctx, "vm")
	assert.Equal(t, provider.StateShutoff, st)
	require.NoError(t, h.Shutdown(ctx, "vm", time.Second), "stopping a stopped domain is not an error")

	require.NoError(t, h.Undefine(ctx, "vm"))
	require.NoError(t, h.Undefine(ctx, "vm"), "undefining a missing domain is not an error")
	_, err = h.State(ctx, "vm")
	assert.ErrorIs(t, err, provider.ErrNotFound)

	require.NoError(t, h.DeleteVolume(ctx, "default", "vm-root.qcow2"))
	require.NoError(t, h.DeleteVolume(ctx, "default", "vm-root.qcow2"))
	_, err = h.VolumePath(ctx, "default", "vm-root.qcow2")
	assert.ErrorIs(t, err, provider.ErrNotFound)
}

// MissingImage checks that a root disk on an image the pool lacks, or in a
// pool that does not exist, is refused with a message naming it.
func MissingImage(t *testing.T, h provider.Hypervisor) {
	ctx := context.Background()
	_, err := h.EnsureVolume(ctx, provider.Volume{Pool: "default", Name: "x.qcow2", CapacityBytes: 1 << 30, Format: "qcow2", BackingVolume: "nope.qcow2", BackingFormat: "qcow2"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `image volume "nope.qcow2" is not in storage pool "default"`)
	_, err = h.EnsureVolume(ctx, provider.Volume{Pool: "fast", Name: "x.qcow2", CapacityBytes: 1 << 30, Format: "qcow2"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `storage pool "fast" does not exist`)
}

// Snapshots checks snapshots of a running and a stopped domain on h, and
// returns the running one's first snapshot (s1, asked to quiesce) and what
// taking it again returned, for provider-specific checks.
func Snapshots(t *testing.T, h provider.Hypervisor, image string) (first, again provider.Snapshot) {
	ctx := context.Background()
	path, err := h.EnsureVolume(ctx, rootDisk(image))
	require.NoError(t, err)
	d := Domain("vm")
	d.Disks = []provider.Disk{{Path: path, Format: "qcow2"}}
	require.NoError(t, h.Define(ctx, d))
	require.NoError(t, h.Start(ctx, "vm"))

	_, err = h.CreateSnapshot(ctx, "vm", provider.SnapshotRequest{Name: "disk", DiskOnly: true})
	assert.ErrorIs(t, err, provider.ErrUnsupported, "disk-only of a running guest is refused, not silently taken with memory")

	first, err = h.CreateSnapshot(ctx, "vm", provider.SnapshotRequest{Name: "s1", Quiesce: true})
	require.NoError(t, err)
	assert.Equal(t, "s1", first.Name)
	assert.True(t, first.IncludesMemory)
	assert.Equal(t, int64(512<<20), first.SizeBytes)
	assert.WithinDuration(t, time.Now(), first.CreationTime, time.Minute)
	again, err = h.CreateSnapshot(ctx, "vm", provider.SnapshotRequest{Name: "s1"})
	require.NoError(t, err)
	assert.Equal(t, first.CreationTime, again.CreationTime, "taking the same snapshot again returns the first")

	require.NoError(t, h.RevertSnapshot(ctx, "vm", "s1", false))
	st, err := h.State(ctx, "vm")
	require.NoError(t, err)
	assert.Equal(t, provider.StateShutoff, st, "reverted and left off")
	require.NoError(t, h.RevertSnapshot(ctx, "vm", "s1", true))
	st, err = h.State(ctx, "vm")
	require.NoError(t, err)
	assert.Equal(t, provider.StateRunning, st, "reverted into its running state")
	assert.ErrorIs(t, h.RevertSnapshot(ctx, "vm", "nope", true), provider.ErrNotFound)

	names, err := h.Snapshots(ctx, "vm")
	require.NoError(t, err)
	assert.Equal(t, []string{"s1"}, names)
	require.NoError(t, h.DeleteSnapshot(ctx, "vm", "s1"))
	require.NoError(t, h.DeleteSnapshot(ctx, "vm", "s1"), "deleting again is not an error")
	names, err = h.Snapshots(ctx, "vm")
	require.NoError(t, err)
	assert.Empty(t, names)
	require.NoError(t, h.DeleteSnapshot(ctx, "gone", "s1"), "nor is a missing domain")
	require.NoError(t, h.Shutdown(ctx, "vm", time.Second))
	off, err := h.CreateSnapshot(ctx, "vm", provider.SnapshotRequest{Name: "off", DiskOnly: true})
	require.NoError(t, err)
	assert.False(t, off.IncludesMemory, "a stopped VM's snapshot is of its disks")
	return first, again
}
