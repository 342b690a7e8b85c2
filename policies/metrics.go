package policies

import (
	"github.com/prometheus/client_golang/prometheus"
)

var (
	evaluations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "novacron_policy_evaluations_total",
		Help: "Policy evaluations by policy, decision point and result (allow, deny, warn, dryrun, error).",
	}, []string{"policy", "decision", "result"})

	evalDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "novacron_policy_evaluation_duration_seconds",
		Help:    "Time to evaluate one policy for one decision.",
		Buckets: prometheus.ExponentialBuckets(0.00001, 2, 16),
	}, []string{"decision"})
)

// RegisterMetrics adds the engine's metrics to reg.
func RegisterMetrics(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{evaluations, evalDuration} {
		if err := reg.Register(c); err != nil {
			if _, dup := err.(prometheus.AlreadyRegisteredError); !dup {
				return err
			}
		}
	}
	return nil
}
