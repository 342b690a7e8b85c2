package v1alpha1

import (
	"errors"
	"fmt"
	"time"

	"github.com/robfig/cron/v3"
)

// cronParser reads the standard 5-field form, and descriptors such as @daily.
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ErrTimeZone is returned for a time zone that is not an IANA name.
var ErrTimeZone = errors.New("must be an IANA time zone such as Europe/Berlin")

// ErrNeverFires is returned for a schedule that parses but matches no date.
var ErrNeverFires = errors.New("never fires (no such date); check the day of month and month")

// ParseSchedule reads a snapshotPolicy's schedule in its time zone (UTC when
// empty). The error says which of the two is wrong. Admission and the
// schedule controller read schedules through it, so they agree.
func ParseSchedule(schedule, timeZone string) (cron.Schedule, *time.Location, error) {
	loc := time.UTC
	if timeZone != "" {
		l, err := time.LoadLocation(timeZone)
		if err != nil {
			return nil, nil, fmt.Errorf("timeZone %q: %w", timeZone, ErrTimeZone)
		}
		loc = l
	}
	sched, err := cronParser.Parse(schedule)
	if err != nil {
		return nil, nil, fmt.Errorf("schedule %q: must be a 5-field cron schedule (minute hour day-of-month month day-of-week): %w", schedule, err)
	}
	// The parser gives up on schedules that match nothing within five years.
	if sched.Next(time.Date(2026, 1, 1, 0, 0, 0, 0, loc)).IsZero() {
		return nil, nil, fmt.Errorf("schedule %q: %w", schedule, ErrNeverFires)
	}
	return sched, loc, nil
}
