package integration

import (
	"bufio"
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// countObjects counts the Kubernetes objects in the YAML files under dir.
func countObjects(t *testing.T, dir string) int {
	n := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".yaml") {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		r := utilyaml.NewYAMLReader(bufioReader(raw))
		for {
			doc, err := r.Read()
			if err != nil {
				break
			}
			var obj map[string]any
			require.NoError(t, utilyaml.Unmarshal(doc, &obj), path)
			if obj["kind"] != nil {
				n++
			}
		}
		return nil
	})
	require.NoError(t, err)
	return n
}

// Every object under manifests/ is accepted by a real API server as
// `kubectl apply` sends it, with strict field validation, cert-manager's and
// the Prometheus Operator's CRDs standing in for those projects.
func TestInstallManifestsPassServerDryRun(t *testing.T) {
	ctx := context.Background()
	_, err := env.Kubectl(ctx, "apply", "-f", filepath.Join(env.RepoRoot, "test", "fixtures", "crds"))
	require.NoError(t, err)
	_, err = env.Kubectl(ctx, "wait", "--for=condition=Established", "--timeout=30s",
		"crd/issuers.cert-manager.io", "crd/certificates.cert-manager.io", "crd/servicemonitors.monitoring.coreos.com")
	require.NoError(t, err)
	// A dry run creates nothing, so the namespace the other objects live in
	// must exist for real.
	for _, ns := range []string{"operator/namespace.yaml", "samples/namespace-gpu.yaml"} {
		_, err = env.Kubectl(ctx, "apply", "-f", filepath.Join(env.RepoRoot, "manifests", ns))
		require.NoError(t, err)
	}

	dir := filepath.Join(env.RepoRoot, "manifests")
	out, stderr, err := env.KubectlIO(ctx, "", "apply", "--dry-run=server", "--validate=strict", "-R", "-f", dir)
	require.NoError(t, err)
	assert.NotContains(t, stderr, "unknown field")
	want := countObjects(t, dir)
	assert.Greater(t, want, 40)
	assert.Equal(t, want, strings.Count(out, "(server dry run)"), "every object in manifests/ went through the API server:\n%s", out)
	for _, o := range []string{
		"deployment.apps/novacron-controller-manager", "deployment.apps/novacron-scheduler",
		"servicemonitor.monitoring.coreos.com/novacron-controller-manager", "certificate.cert-manager.io/novacron-webhook-cert",
		"validatingwebhookconfiguration.admissionregistration.k8s.io/novacron-validating-webhook",
		"virtualmachinepolicy.novacron.io/vm-size-limits", "configmap/novacron-image-catalog",
	} {
		assert.Contains(t, out, o)
	}

	// And a broken manifest would fail: a misplaced field is caught.
	bad := strings.Replace(readFile(t, filepath.Join(dir, "monitoring", "servicemonitor.yaml")), "      interval: 30s", "      intervall: 30s", 1)
	_, _, err = env.KubectlIO(ctx, bad, "apply", "--dry-run=server", "--validate=strict", "-f", "-")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "intervall")
}

func readFile(t *testing.T, path string) string {
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(raw)
}

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }
