package v1alpha1

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseBandwidth reads a migrationPolicy.bandwidth such as "10Gbps" or
// "500Mbps" (bits per second, decimal units) and returns bytes per second.
func ParseBandwidth(s string) (int64, error) {
	num, ok := strings.CutSuffix(s, "bps")
	if !ok || num == "" {
		return 0, fmt.Errorf("%q must be a number and a unit such as 500Mbps, 1Gbps or 10Gbps", s)
	}
	mult := map[byte]float64{'K': 1e3, 'M': 1e6, 'G': 1e9, 'T': 1e12}[num[len(num)-1]]
	if mult == 0 {
		return 0, fmt.Errorf("%q must use one of the units Kbps, Mbps, Gbps, Tbps", s)
	}
	v, err := strconv.ParseFloat(num[:len(num)-1], 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("%q must be a positive number and a unit such as 10Gbps", s)
	}
	return int64(v * mult / 8), nil
}
