package testenv

import (
	"context"
	"sync"
)

// Faults lets a test hold a wrapped hypervisor call until it says so, or make
// the next calls fail. The zero value lets every call through.
type Faults struct {
	mu    sync.Mutex
	gate  chan struct{}
	fails int
}

// Hold makes calls wait until release is called.
func (f *Faults) Hold() (release func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan struct{})
	f.gate = ch
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.gate == ch {
			f.gate = nil
		}
		close(ch)
	}
}

// Held says whether calls are being held.
func (f *Faults) Held() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gate != nil
}

// FailNext makes the next n calls fail.
func (f *Faults) FailNext(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fails = n
}

// Enter is called at the start of a wrapped call: it waits while calls are
// held (or until ctx ends, returning its error) and says whether this call
// is to fail.
func (f *Faults) Enter(ctx context.Context) (fail bool, err error) {
	f.mu.Lock()
	gate := f.gate
	if f.fails > 0 {
		f.fails--
		fail = true
	}
	f.mu.Unlock()
	if fail {
		return true, nil
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	return false, nil
}
