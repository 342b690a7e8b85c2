package security

import (
	"crypto/tls"
	"net"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Finding 14: the operator's webhook server, which every pod in the cluster
// can reach, speaks only HTTP/1.1 (HTTP/2's stream handling let one client
// exhaust a server: rapid reset).
func TestTheWebhookServerRefusesHTTP2(t *testing.T) {
	addr := net.JoinHostPort(env.WebhookHost, strconv.Itoa(env.WebhookPort))
	conn, err := tls.Dial("tcp", addr, &tls.Config{NextProtos: []string{"h2", "http/1.1"}, InsecureSkipVerify: true}) //nolint:gosec // only the protocol is looked at
	require.NoError(t, err)
	defer conn.Close()
	assert.Equal(t, "http/1.1", conn.ConnectionState().NegotiatedProtocol)
}
