package devenv

import (
	"errors"
	"testing"

	"github.com/go-logr/logr/funcr"
	"github.com/stretchr/testify/assert"
)

func TestEnvtestsRetriesAreKeptOutOfTheLog(t *testing.T) {
	var lines []string
	l := QuietStartRetries(funcr.New(func(prefix, args string) { lines = append(lines, prefix+" "+args) }, funcr.Options{}))
	l.WithName("controller-runtime").WithName("test-env").Error(errors.New("timeout waiting for process kube-apiserver"), "unable to start the controlplane")
	l.WithName("controller-runtime").WithName("manager").Error(errors.New("boom"), "problem")
	l.Info("hello")
	assert.Len(t, lines, 2)
	assert.Contains(t, lines[0], "problem")
	assert.Contains(t, lines[1], "hello")
}
