package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/novacron/operator/devenv"
	"github.com/novacron/operator/manifests"
	"github.com/novacron/operator/scheduler/server"
)

// SchedulerEdit changes the KubeSchedulerConfiguration (as YAML maps) a test
// runs the scheduler with.
type SchedulerEdit func(cfg map[string]any) error

// SchedulerConfig is manifests/scheduler/config.yaml as a local, single
// scheduler runs it against this environment, with edits applied.
func (e *Env) SchedulerConfig(edits ...SchedulerEdit) (string, error) {
	raw, err := manifests.FS.ReadFile("scheduler/config.yaml")
	if err != nil {
		return "", err
	}
	doc, err := server.LocalConfig(raw, e.Kubeconfig)
	if err != nil {
		return "", err
	}
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(doc), &cfg); err != nil {
		return "", err
	}
	for _, edit := range edits {
		if err := edit(cfg); err != nil {
			return "", err
		}
	}
	out, err := yaml.Marshal(cfg)
	return string(out), err
}

// WithProfileVariant adds a copy of the novacron-scheduler profile under
// another name with VMPlacement's args changed: the shipped profile in all but
// what a test compares.
func WithProfileVariant(name string, args map[string]any) SchedulerEdit {
	return func(cfg map[string]any) error {
		profiles, _ := cfg["profiles"].([]any)
		for _, p := range profiles {
			if p, ok := p.(map[string]any); ok && p["schedulerName"] == server.SchedulerName {
				variant := runtime.DeepCopyJSONValue(p).(map[string]any)
				variant["schedulerName"] = name
				pcs, _ := variant["pluginConfig"].([]any)
				for _, pc := range pcs {
					if pc, ok := pc.(map[string]any); ok && pc["name"] == "VMPlacement" {
						a, _ := pc["args"].(map[string]any)
						for k, v := range args {
							a[k] = v
						}
					}
				}
				cfg["profiles"] = append(profiles, variant)
				return nil
			}
		}
		return fmt.Errorf("scheduler config: no profile %s", server.SchedulerName)
	}
}

// RunScheduler runs novacron-scheduler in this process, configured as
// manifests/scheduler/config.yaml configures it plus edits, until stop is
// called, with kube-controller-manager's resourceclaim controller, which
// makes each launcher pod the device claim the scheduler allocates. dir
// holds their files. Only one may run per process.
func (e *Env) RunScheduler(dir string, edits ...SchedulerEdit) (stop func(), err error) {
	doc, err := e.SchedulerConfig(edits...)
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "scheduler.yaml")
	if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
		return nil, err
	}
	stopKCM, err := e.RunControllerManager(dir, "resourceclaim-controller")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.Run(ctx, cfg) }()
	return func() { cancel(); <-done; stopKCM() }, nil
}

// RunControllerManager runs the real kube-controller-manager with only the
// controllers named (resourceclaim-controller, for suites whose launcher
// pods claim devices) until stop is called. dir holds its files.
func (e *Env) RunControllerManager(dir string, controllers ...string) (stop func(), err error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	assets, err := assetsDir(root)
	if err != nil {
		return nil, err
	}
	kcmDir := filepath.Join(dir, "kube-controller-manager")
	if err := os.MkdirAll(kcmDir, 0o700); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- devenv.ControllerManager(ctx, e.env, assets, e.Kubeconfig, kcmDir, controllers) }()
	return func() { cancel(); <-done }, nil
}
