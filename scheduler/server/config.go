package server

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// LocalConfig turns the scheduler's ConfigMap (manifests/scheduler/config.yaml)
// into a KubeSchedulerConfiguration for a single in-process scheduler: no
// leader election (there is no second replica to elect against) and the API
// server reached through kubeconfig instead of the in-cluster service account.
func LocalConfig(configMap []byte, kubeconfig string) (string, error) {
	var cm corev1.ConfigMap
	if err := yaml.Unmarshal(configMap, &cm); err != nil {
		return "", fmt.Errorf("scheduler config: %w", err)
	}
	doc, ok := cm.Data["config.yaml"]
	if !ok {
		return "", fmt.Errorf("scheduler config: ConfigMap %s has no data.config.yaml", cm.Name)
	}
	const le, cc = "leaderElect: true", "clientConnection:\n"
	if !strings.Contains(doc, le) || !strings.Contains(doc, cc) {
		return "", fmt.Errorf("scheduler config: expected %q and a clientConnection section in data.config.yaml", le)
	}
	doc = strings.Replace(doc, le, "leaderElect: false", 1)
	return strings.Replace(doc, cc, cc+"  kubeconfig: "+kubeconfig+"\n", 1), nil
}
