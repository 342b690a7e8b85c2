package v1alpha1

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseSchedule(t *testing.T) {
	sched, loc, err := ParseSchedule("0 2 * * *", "Europe/Berlin")
	require.NoError(t, err)
	next := sched.Next(time.Date(2026, 12, 1, 12, 0, 0, 0, loc))
	assert.Equal(t, time.Date(2026, 12, 2, 2, 0, 0, 0, loc), next, "2am in the schedule's time zone")
	_, loc, err = ParseSchedule("@daily", "")
	require.NoError(t, err)
	assert.Equal(t, time.UTC, loc)

	_, _, err = ParseSchedule("0 2 * * *", "Mars/Olympus")
	assert.ErrorIs(t, err, ErrTimeZone)
	_, _, err = ParseSchedule("0 2 30 2 *", "")
	assert.ErrorIs(t, err, ErrNeverFires)
	_, _, err = ParseSchedule("every night", "")
	assert.ErrorContains(t, err, "must be a 5-field cron schedule")
}
