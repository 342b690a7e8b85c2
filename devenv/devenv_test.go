package devenv

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// An API server that cannot start is reported with its own words, and
// nothing is left behind.
func TestAnAPIServerThatCannotStartSaysWhy(t *testing.T) {
	real := os.Getenv("KUBEBUILDER_ASSETS")
	if real == "" {
		t.Skip("needs etcd: run through `make test` (or set KUBEBUILDER_ASSETS)")
	}
	assets := t.TempDir()
	for _, bin := range []string{"etcd", "kubectl", "kube-controller-manager"} {
		require.NoError(t, os.Symlink(filepath.Join(real, bin), filepath.Join(assets, bin)))
	}
	// It answers envtest's --help, then fails as a misconfigured one does.
	broken := "#!/bin/sh\n[ \"$1\" = --help ] && exit 0\necho 'E1202 run.go:72] \"command failed\" err=\"invalid port value 99999999\"' >&2\nexit 1\n"
	require.NoError(t, os.WriteFile(filepath.Join(assets, "kube-apiserver"), []byte(broken), 0o755))
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)

	var out bytes.Buffer
	err := Run(context.Background(), Config{AssetsDir: assets, MetricsAddr: "0", Out: &out}, func(Ready) { t.Fatal("ready without an API server") })
	require.Error(t, err)
	assert.Contains(t, err.Error(), "kube-apiserver said (last lines):")
	assert.Contains(t, err.Error(), "invalid port value 99999999")
	assert.NotContains(t, err.Error(), "etcd said", "etcd did nothing wrong")
	assert.Contains(t, out.String(), "starting etcd and kube-apiserver ... failed")
	left, err := os.ReadDir(tmp)
	require.NoError(t, err)
	assert.Empty(t, left, "no folder is left in TMPDIR")
}
