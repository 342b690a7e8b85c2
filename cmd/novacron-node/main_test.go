package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/novacron/operator/devices/discovery"
	"github.com/novacron/operator/devices/sysfs"
)

// An admin debugging a node: `novacron-node --once --dry-run -o yaml` with
// the node's config prints what it would publish, without a cluster.
func TestDryRunPrintsWhatTheNodeWouldPublish(t *testing.T) {
	root := filepath.Join(t.TempDir(), "sys")
	require.NoError(t, sysfs.Write(root, sysfs.Machine{NUMANodes: 1, Devices: []sysfs.PCIDevice{
		{Address: "0000:3b:00.0", Vendor: "10de", Device: "1eb8", Class: "030200", NUMANode: 0, Driver: "nvidia"},
		{Address: "0000:af:00.0", Vendor: "10de", Device: "1eb8", Class: "030200", NUMANode: 0, Driver: "nvidia"},
	}}))
	cfg := filepath.Join(t.TempDir(), "devices.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("gpus: [\"0000:3b:00.0\"]\nmodels: {\"10de:1eb8\": tesla-t4}\n"), 0o644))

	var out bytes.Buffer
	dry := flags{node: "gpu-node-1", sysfsRoot: root, config: cfg, pciIDs: "/nonexistent/pci.ids", once: true, dryRun: true, output: "yaml"}
	require.NoError(t, run(context.Background(), &out, dry))
	assert.Contains(t, out.String(), "# not offered: 0000:af:00.0: bound to nvidia and not in the device config's gpus\n")
	assert.Contains(t, out.String(), "kind: Hypervisor\nmetadata:\n  name: gpu-node-1\nstatus:\n  gpus:\n  - model: tesla-t4\n    pciAddress: 0000:3b:00.0\n    vendor: nvidia\n")
	assert.Contains(t, out.String(), "name: gpu-0000-3b-00-0\n")
	assert.NotContains(t, out.String(), "gpu-0000-af-00-0")

	require.NoError(t, os.WriteFile(cfg, []byte("gpu: [\"0000:3b:00.0\"]\n"), 0o644))
	assert.ErrorContains(t, run(context.Background(), &out, dry), `unknown field "gpu"`, "a misspelt key is refused")
	noNode, onceOnly := dry, dry
	noNode.node, onceOnly.dryRun = "", false
	assert.ErrorContains(t, run(context.Background(), &out, noNode), "--node-name")
	assert.ErrorContains(t, run(context.Background(), &out, onceOnly), "--once and --dry-run go together")
}

// The shipped DaemonSet runs this binary with flags it has, and its
// ConfigMap is a device config the agent accepts.
func TestTheShippedDaemonSetRunsTheAgent(t *testing.T) {
	ds1, err := os.ReadFile(filepath.Join("..", "..", "manifests", "node", "daemonset.yaml"))
	require.NoError(t, err)
	ds2, err := os.ReadFile(filepath.Join("..", "..", "manifests", "node", "config", "devices.yaml"))
	require.NoError(t, err)
	raw := string(ds1) + "\n---\n" + string(ds2)
	var ds appsv1.DaemonSet
	var cm corev1.ConfigMap
	for _, doc := range strings.Split(raw, "\n---\n") {
		var meta metav1.TypeMeta
		require.NoError(t, yaml.Unmarshal([]byte(doc), &meta))
		switch meta.Kind {
		case "DaemonSet":
			require.NoError(t, yaml.UnmarshalStrict([]byte(doc), &ds))
		case "ConfigMap":
			require.NoError(t, yaml.UnmarshalStrict([]byte(doc), &cm))
		}
	}
	require.Len(t, ds.Spec.Template.Spec.Containers, 1)
	require.Equal(t, cm.Name, ds.Spec.Template.Spec.Volumes[1].ConfigMap.Name)
	cmd := ds.Spec.Template.Spec.Containers[0].Command
	require.Equal(t, "/novacron-node", cmd[0])
	fs := flag.NewFlagSet("novacron-node", flag.ContinueOnError)
	f := bind(fs)
	require.NoError(t, fs.Parse(cmd[1:]))
	assert.Equal(t, "/host/sys", f.sysfsRoot)

	cfg := filepath.Join(t.TempDir(), "devices.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(cm.Data["devices.yaml"]), 0o644))
	_, err = discovery.LoadConfig(cfg)
	assert.NoError(t, err, "the shipped device config")
}
