// Package conflict holds NovaCron's rule for write conflicts in reconcilers.
//
// Every controller's writes are optimistic (they carry the version they read),
// so losing to a newer version of the object is routine, not a failure: the
// newer version brings its own reconcile. Retry turns such an error into a
// prompt retry instead of an error with a stack trace in the log and an
// exponential backoff.
package conflict

import (
	"context"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// RetryAfter is how soon a reconcile whose write lost to a newer version of
// the object runs again.
const RetryAfter = 100 * time.Millisecond

// Retry wraps a reconciler so that a conflict is retried after RetryAfter.
// Wrap it around metrics.Instrument, which counts the conflict as such.
func Retry(r reconcile.Reconciler) reconcile.Reconciler {
	return reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
		res, err := r.Reconcile(ctx, req)
		if apierrors.IsConflict(err) {
			return reconcile.Result{RequeueAfter: RetryAfter}, nil
		}
		return res, err
	})
}
