package v1alpha1

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseBandwidth(t *testing.T) {
	for in, want := range map[string]int64{"10Gbps": 1_250_000_000, "1Gbps": 125_000_000, "500Mbps": 62_500_000, "1.5Gbps": 187_500_000, "8Kbps": 1000} {
		got, err := ParseBandwidth(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, bad := range []string{"fast", "10", "10Gb", "Gbps", "10Xbps", "-1Gbps", "0Gbps"} {
		_, err := ParseBandwidth(bad)
		assert.Error(t, err, bad)
	}
}
