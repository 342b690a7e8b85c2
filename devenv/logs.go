package devenv

import (
	"strings"

	"github.com/go-logr/logr"
)

// QuietStartRetries keeps envtest's note on each retry of a control plane
// that does not start out of l: Run reports the failure once, with what
// kube-apiserver said, and five "unable to start the controlplane" lines
// before it would only bury that.
func QuietStartRetries(l logr.Logger) logr.Logger {
	return logr.New(&quiet{sink: l.GetSink()})
}

type quiet struct {
	sink  logr.LogSink
	muted bool
}

func (q *quiet) Init(info logr.RuntimeInfo) { q.sink.Init(info) }
func (q *quiet) Enabled(level int) bool     { return !q.muted && q.sink.Enabled(level) }

func (q *quiet) Info(level int, msg string, kv ...any) {
	if !q.muted {
		q.sink.Info(level, msg, kv...)
	}
}

func (q *quiet) Error(err error, msg string, kv ...any) {
	if !q.muted {
		q.sink.Error(err, msg, kv...)
	}
}

func (q *quiet) WithValues(kv ...any) logr.LogSink {
	return &quiet{sink: q.sink.WithValues(kv...), muted: q.muted}
}

// WithName mutes envtest's logger (controller-runtime's "test-env").
func (q *quiet) WithName(name string) logr.LogSink {
	return &quiet{sink: q.sink.WithName(name), muted: q.muted || strings.HasSuffix(name, "test-env")}
}
