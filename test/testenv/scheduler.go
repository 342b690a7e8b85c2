package testenv

import (
	"context"
	"os"
	"path/filepath"

	"github.com/novacron/operator/scheduler/server"
)

// RunScheduler runs novacron-scheduler in this process, configured as
// manifests/scheduler/config.yaml configures it (plus extraProfiles, YAML list
// items appended to its profiles), until stop is called. dir holds its
// configuration file. Only one may run per process.
func (e *Env) RunScheduler(dir, extraProfiles string) (stop func(), err error) {
	raw, err := os.ReadFile(filepath.Join(e.RepoRoot, "manifests", "scheduler", "config.yaml"))
	if err != nil {
		return nil, err
	}
	doc, err := server.LocalConfig(raw, e.Kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "scheduler.yaml")
	if err := os.WriteFile(cfg, []byte(doc+extraProfiles), 0o600); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.Run(ctx, cfg) }()
	return func() { cancel(); <-done }, nil
}
