package fake

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/novacron/operator/operator/provider"
	"github.com/novacron/operator/operator/provider/providertest"
)

func host(t *testing.T, c *Connector, uri string) provider.Hypervisor {
	t.Helper()
	c.Host(uri).AddVolume("default", "base.qcow2")
	h, err := c.Hypervisor(context.Background(), uri)
	require.NoError(t, err)
	return h
}

// The fake keeps the contract the libvirt provider keeps.
func TestTheFakeKeepsTheProviderContract(t *testing.T) {
	c := NewConnector()
	providertest.Lifecycle(t, host(t, c, "fake://a"), "base.qcow2")
	providertest.MissingImage(t, host(t, c, "fake://b"))
	s, _ := providertest.Snapshots(t, host(t, c, "fake://c"), "base.qcow2")
	assert.False(t, s.Quiesced, "no guest agent here")
}

func TestMigrateMovesTheDomainOrLeavesItWhereItWas(t *testing.T) {
	ctx := context.Background()
	c := NewConnector()
	src, dst := host(t, c, "fake://src"), host(t, c, "fake://dst")
	require.NoError(t, src.Define(ctx, providertest.Domain("vm")))
	require.NoError(t, src.Start(ctx, "vm"))

	c.Host("fake://dst").SetDown(true)
	assert.ErrorIs(t, src.Migrate(ctx, "vm", provider.MigrateOptions{DestURI: "fake://dst"}), provider.ErrUnreachable)
	st, err := src.State(ctx, "vm")
	require.NoError(t, err)
	assert.Equal(t, provider.StateRunning, st, "a failed migration leaves the guest running here")
	c.Host("fake://dst").SetDown(false)

	// Held: in progress on the source until released; an abort ends it.
	release := c.Host("fake://src").HoldMigrations()
	done := make(chan error, 1)
	go func() { done <- src.Migrate(ctx, "vm", provider.MigrateOptions{DestURI: "fake://dst"}) }()
	require.Eventually(t, func() bool {
		p, err := src.MigrationProgress(ctx, "vm")
		return err == nil && !p.Completed && p.DataTotal > 0
	}, 5*time.Second, time.Millisecond)
	require.NoError(t, src.AbortMigration(ctx, "vm"))
	require.Error(t, <-done)
	_, err = src.MigrationProgress(ctx, "vm")
	assert.ErrorIs(t, err, provider.ErrNotFound, "no job after the abort")

	go func() { done <- src.Migrate(ctx, "vm", provider.MigrateOptions{DestURI: "fake://dst"}) }()
	release()
	require.NoError(t, <-done)
	_, err = src.State(ctx, "vm")
	assert.ErrorIs(t, err, provider.ErrNotFound, "undefined on the source")
	st, err = dst.State(ctx, "vm")
	require.NoError(t, err)
	assert.Equal(t, provider.StateRunning, st, "running on the destination")
	p, err := dst.MigrationProgress(ctx, "vm")
	require.NoError(t, err)
	assert.True(t, p.Completed)
}

func TestFaults(t *testing.T) {
	ctx := context.Background()
	c := NewConnector()
	h := host(t, c, "fake://a")
	boom := errors.New("boom")
	c.Host("fake://a").FailNext("Define", boom)
	assert.ErrorIs(t, h.Define(ctx, providertest.Domain("vm")), boom)
	require.NoError(t, h.Define(ctx, providertest.Domain("vm")), "only the next call fails")
	c.Host("fake://a").SetDown(true)
	_, err := c.Hypervisor(ctx, "fake://a")
	assert.ErrorIs(t, err, provider.ErrUnreachable)
	_, err = h.State(ctx, "vm")
	assert.ErrorIs(t, err, provider.ErrUnreachable, "a connection handed out before fails too")
	assert.Equal(t, 2, c.Host("fake://a").Calls()["Define"])
	c.Host("fake://a").SetDown(false)
	c.Host("fake://a").CrashOn("Start")
	assert.PanicsWithValue(t, Crash{Method: "Start"}, func() { _ = h.Start(ctx, "vm") })
}
