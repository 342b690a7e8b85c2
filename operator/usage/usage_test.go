package usage

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestCoresAreTheRateBetweenTwoSamples(t *testing.T) {
	var s Store
	t0 := time.Now()
	u, known := s.Observe("team", "web", 10*time.Second, 1<<30, t0)
	assert.False(t, known, "one sample gives no rate")
	assert.Equal(t, float64(1<<30), u.MemoryBytes)
	_, ok := s.Get("team", "web")
	assert.False(t, ok, "not known until both figures are")

	u, known = s.Observe("team", "web", 25*time.Second, 2<<30, t0.Add(10*time.Second))
	assert.True(t, known)
	assert.InDelta(t, 1.5, u.Cores, 1e-9, "15 s of CPU in 10 s")
	got, ok := s.Get("team", "web")
	assert.True(t, ok)
	assert.Equal(t, u, got)

	// A restarted guest's CPU time starts again from zero: no negative rate.
	_, known = s.Observe("team", "web", time.Second, 2<<30, t0.Add(20*time.Second))
	assert.False(t, known)

	s.Forget("team", "web")
	_, ok = s.Get("team", "web")
	assert.False(t, ok)
	s.Record("team", "db", Usage{Cores: 0.5, MemoryBytes: 1 << 30})
	got, ok = s.Get("team", "db")
	assert.True(t, ok)
	assert.Equal(t, 0.5, got.Cores)
}
