package conflict_test

import (
	"context"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/novacron/operator/operator/conflict"
	"github.com/novacron/operator/operator/metrics"
)

func TestInstrumentRetriesConflictsAndPassesOtherErrors(t *testing.T) {
	var next error
	r := conflict.Retry(metrics.Instrument("test-controller", reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) {
		return reconcile.Result{}, next
	})))
	count := func(result string) float64 {
		return testutil.ToFloat64(metrics.ReconcileTotal.WithLabelValues("test-controller", result))
	}

	next = apierrors.NewConflict(schema.GroupResource{Group: "novacron.io", Resource: "virtualmachines"}, "my-vm", errors.New("the object has been modified"))
	res, err := r.Reconcile(context.Background(), reconcile.Request{})
	require.NoError(t, err, "a lost optimistic write is retried, not reported")
	assert.Equal(t, conflict.RetryAfter, res.RequeueAfter)
	assert.Equal(t, 1.0, count("conflict"))

	next = errors.New("hypervisor unreachable")
	_, err = r.Reconcile(context.Background(), reconcile.Request{})
	assert.ErrorIs(t, err, next)
	assert.Equal(t, 1.0, count("error"))
	assert.Equal(t, 1.0, count("conflict"))
}
