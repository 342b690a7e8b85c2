package libvirt

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	golibvirt "libvirt.org/go/libvirt"

	"github.com/novacron/operator/operator/provider"
)

// A host whose dial hangs holds up its own callers only: another host is
// reached at once, and a caller of the hung host leaves when its context ends.
func TestAHungDialHoldsUpOnlyItsHost(t *testing.T) {
	c := NewConnector(URIRules{Test: true})
	t.Cleanup(c.Close)
	hung, fine := newNode(t, "hung"), newNode(t, "fine")
	entered, release := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(release) })
	c.Dial = func(uri string) (*golibvirt.Connect, error) {
		if uri == hung {
			close(entered)
			<-release
		}
		return golibvirt.NewConnect(uri)
	}
	go func() { _, _ = c.Hypervisor(context.Background(), hung) }()
	<-entered

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h, err := c.Hypervisor(ctx, fine)
	require.NoError(t, err, "a host is reached while another's dial hangs")
	_, err = h.Info(ctx)
	require.NoError(t, err)

	short, cancelShort := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancelShort()
	_, err = c.Hypervisor(short, hung)
	assert.ErrorIs(t, err, provider.ErrUnreachable)
	assert.ErrorContains(t, err, "still connecting")
}

// connected is a Connector (maxAbandoned unanswered calls per connection,
// 0: the default) holding a connection to a new node, counting its dials.
func connected(t *testing.T, maxAbandoned int) (*Connector, string, *atomic.Int32, *hypervisor) {
	t.Helper()
	c := NewConnector(URIRules{Test: true})
	if maxAbandoned > 0 {
		c.MaxAbandoned = maxAbandoned
	}
	t.Cleanup(c.Close)
	uri := newNode(t, "n1")
	dials := &atomic.Int32{}
	c.Dial = func(u string) (*golibvirt.Connect, error) { dials.Add(1); return golibvirt.NewConnect(u) }
	hv, err := c.Hypervisor(t.Context(), uri)
	require.NoError(t, err)
	return c, uri, dials, hv.(*hypervisor)
}

// A call that outlasts its timeout (a big memory snapshot) is given up on
// without tearing down the host's connection, which others keep using.
func TestASlowCallKeepsTheConnection(t *testing.T) {
	c, uri, dials, h := connected(t, 0)

	release := make(chan struct{})
	err := call(t.Context(), h, 20*time.Millisecond, func() error { <-release; return nil })
	close(release)
	err = h.wrap(err, "snapshotting domain vm-1")
	require.Error(t, err)
	assert.NotErrorIs(t, err, provider.ErrUnreachable, "slow is not unreachable")

	again, err := c.Hypervisor(t.Context(), uri)
	require.NoError(t, err)
	_, err = again.Info(t.Context())
	require.NoError(t, err)
	assert.Equal(t, int32(1), dials.Load(), "the connection was kept")
}

// Calls a host leaves unanswered are bounded: past MaxAbandoned, calls on
// that connection fail fast instead of piling up goroutines, and the host is
// dialed again (a wedged connection is not the host's last word).
func TestAbandonedCallsAreBounded(t *testing.T) {
	c, uri, dials, h := connected(t, 2)

	release := make(chan struct{})
	var returned atomic.Int32
	for range 2 {
		err := call(t.Context(), h, 10*time.Millisecond, func() error { <-release; returned.Add(1); return nil })
		require.ErrorIs(t, err, errAbandoned)
	}
	ran := false
	err := call(t.Context(), h, time.Second, func() error { ran = true; return nil })
	assert.ErrorIs(t, err, provider.ErrUnreachable)
	assert.ErrorContains(t, err, "2 calls")
	assert.False(t, ran, "no third call is started")

	assert.ErrorContains(t, err, "reconnecting")
	again, err := c.Hypervisor(t.Context(), uri)
	require.NoError(t, err)
	_, err = again.Info(t.Context())
	assert.NoError(t, err, "a new connection answers")
	assert.Equal(t, int32(2), dials.Load())

	close(release)
	require.Eventually(t, func() bool { return h.live.abandoned.Load() == 0 }, 5*time.Second, time.Millisecond)
	assert.Equal(t, int32(2), returned.Load())
}
