package livemigration

import (
	"context"
	"errors"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/event"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

// errCancelled is a job's error when it was cancelled without another reason.
var errCancelled = errors.New("cancelled")

// abortTimeout bounds an abort: a source daemon stuck talking to a dead
// target must not hold the rollback, which looks at the domain's state next.
const abortTimeout = 5 * time.Second

// jobs owns the hypervisor calls that migrate, one per migration in flight.
// Each runs in its own goroutine with its own deadline, so no reconcile waits
// for a migration; a job that returns wakes its migration up through done.
// After an operator restart there are none: the controller then resolves
// from both hypervisors where the VM runs.
type jobs struct {
	mu   sync.Mutex
	m    map[types.UID]*job
	done chan event.TypedGenericEvent[*novacronv1.VirtualMachineMigration]
}

// job is one migration call in flight.
type job struct {
	cancel context.CancelFunc
	// done is closed when the call returned; err is then its outcome.
	done chan struct{}
	err  error
	// why, when set before cancel, is the failure to report instead of a
	// cancellation.
	why error
}

func newJobs() *jobs {
	return &jobs{m: map[types.UID]*job{}, done: make(chan event.TypedGenericEvent[*novacronv1.VirtualMachineMigration], 16)}
}

// start runs migrate for m within timeout. A call that ends by its deadline
// or a cancel may leave the hypervisor's job running: abort stops it there,
// and the job's error is late (the deadline passed), why, or errCancelled.
func (js *jobs) start(m *novacronv1.VirtualMachineMigration, timeout time.Duration, late error, migrate, abort func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	j := &job{cancel: cancel, done: make(chan struct{})}
	js.mu.Lock()
	js.m[m.UID] = j
	js.mu.Unlock()
	finished := m.DeepCopy()
	go func() {
		defer func() {
			close(j.done)
			select { // a full channel (or a stopped controller) leaves it to the poll
			case js.done <- event.TypedGenericEvent[*novacronv1.VirtualMachineMigration]{Object: finished}:
			default:
			}
		}()
		defer cancel()
		j.err = migrate(ctx)
		if ctx.Err() == nil {
			return
		}
		abortCtx, cancelAbort := context.WithTimeout(context.Background(), abortTimeout)
		_ = abort(abortCtx)
		cancelAbort()
		switch {
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			j.err = late
		case j.why != nil:
			j.err = j.why
		default:
			j.err = errCancelled
		}
	}()
}

// get is the migration's job, nil when none runs in this process.
func (js *jobs) get(uid types.UID) *job {
	js.mu.Lock()
	defer js.mu.Unlock()
	return js.m[uid]
}

// interrupt ends a running job with why as its failure and waits for it to
// return; the job stays until forgotten, for its outcome to be read.
func (js *jobs) interrupt(j *job, why error) {
	j.why = why
	j.cancel()
	<-j.done
}

// stop cancels the migration's job, if any, waits for it and forgets it.
func (js *jobs) stop(uid types.UID) {
	if j := js.get(uid); j != nil {
		j.cancel()
		<-j.done
		js.forget(uid)
	}
}

// forget drops a job that returned.
func (js *jobs) forget(uid types.UID) {
	js.mu.Lock()
	defer js.mu.Unlock()
	delete(js.m, uid)
}
