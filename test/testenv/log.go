package testenv

import (
	"os"

	"go.uber.org/zap/zapcore"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

// SetLogger gives the controllers a test runs a logger that prints errors
// only, so a passing run stays quiet; NOVACRON_TEST_VERBOSE=1 prints
// everything, for following a failing test step by step.
func SetLogger() {
	level := zapcore.ErrorLevel
	if os.Getenv("NOVACRON_TEST_VERBOSE") != "" {
		level = zapcore.DebugLevel
	}
	ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.Level(level)))
}
