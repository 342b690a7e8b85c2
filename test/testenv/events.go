package testenv

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// WaitEvents waits until the events about the object at key satisfy ok and
// returns them. Events are written in the background, after the status change
// that caused them, so a test that sees the status must still wait for them.
func (e *Env) WaitEvents(t testing.TB, key client.ObjectKey, timeout time.Duration, what string, ok func([]eventsv1.Event) bool) []eventsv1.Event {
	t.Helper()
	var about []eventsv1.Event
	deadline := time.Now().Add(timeout)
	for {
		var list eventsv1.EventList
		if err := e.Client.List(context.Background(), &list, client.InNamespace(key.Namespace)); err == nil {
			about = about[:0]
			for _, ev := range list.Items {
				if ev.Regarding.Name == key.Name {
					about = append(about, ev)
				}
			}
			if ok(about) {
				return about
			}
		}
		if time.Now().After(deadline) {
			var seen []string
			for _, ev := range about {
				seen = append(seen, fmt.Sprintf("%s: %s", ev.Reason, ev.Note))
			}
			t.Fatalf("%s: timed out waiting for events %s; seen:\n%s", key, what, strings.Join(seen, "\n"))
			return nil
		}
		time.Sleep(Poll)
	}
}

// HasReasons is true once the events include every one of reasons.
func HasReasons(reasons ...string) func([]eventsv1.Event) bool {
	return func(events []eventsv1.Event) bool {
		for _, r := range reasons {
			if !slices.ContainsFunc(events, func(ev eventsv1.Event) bool { return ev.Reason == r }) {
				return false
			}
		}
		return true
	}
}

// HasNote is true once an event's note contains s.
func HasNote(s string) func([]eventsv1.Event) bool {
	return func(events []eventsv1.Event) bool {
		return slices.ContainsFunc(events, func(ev eventsv1.Event) bool { return strings.Contains(ev.Note, s) })
	}
}
