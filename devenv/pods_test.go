package devenv

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// owner is a file's mode and group.
func owner(t *testing.T, path string) (os.FileMode, uint32) {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	return fi.Mode(), fi.Sys().(*syscall.Stat_t).Gid
}

// Volumes get the modes and owners the kubelet gives them: a Secret's files
// root-owned with their defaultMode, and with an fsGroup that group and
// group read; an emptyDir 0777, with an fsGroup its group and setgid. The
// shipped operator reads its libvirt key only through the fsGroup.
func TestPodVolumesGetTheKubeletsModes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("giving files to a group needs root")
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "tls", Namespace: "ns"}, Data: map[string][]byte{"clientkey.pem": []byte("key")}}
	r := &podRunner{Client: fake.NewClientBuilder().WithScheme(scheme()).WithObjects(secret).Build(), dir: t.TempDir()}
	pod := func(fsGroup *int64) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "uid"}, Spec: corev1.PodSpec{
			SecurityContext: &corev1.PodSecurityContext{FSGroup: fsGroup},
			Volumes: []corev1.Volume{
				{Name: "tls", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "tls", DefaultMode: ptr.To[int32](0o400)}}},
				{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "missing", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "none", Optional: ptr.To(true)}}},
			}}}
	}

	vols, err := r.volumes(context.Background(), pod(ptr.To[int64](65532)))
	require.NoError(t, err)
	mode, gid := owner(t, filepath.Join(vols["tls"].path, "clientkey.pem"))
	assert.Equal(t, os.FileMode(0o440), mode.Perm())
	assert.Equal(t, uint32(65532), gid)
	assert.True(t, vols["tls"].readOnly)
	mode, gid = owner(t, vols["tmp"].path)
	assert.Equal(t, os.FileMode(0o777), mode.Perm())
	assert.NotZero(t, mode&os.ModeSetgid)
	assert.Equal(t, uint32(65532), gid)
	entries, err := os.ReadDir(vols["missing"].path)
	require.NoError(t, err)
	assert.Empty(t, entries, "an optional Secret that does not exist mounts empty")

	vols, err = r.volumes(context.Background(), pod(nil))
	require.NoError(t, err)
	mode, gid = owner(t, filepath.Join(vols["tls"].path, "clientkey.pem"))
	assert.Equal(t, os.FileMode(0o400), mode.Perm(), "without an fsGroup only root reads it")
	assert.Equal(t, uint32(0), gid)

	_, err = r.volumes(context.Background(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "q", Namespace: "ns", UID: "uid2"}, Spec: corev1.PodSpec{
		Volumes: []corev1.Volume{{Name: "tls", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "none"}}}}}})
	assert.ErrorContains(t, err, "volume tls", "a Secret that must exist and does not keeps the pod from starting")
}

// A pod asking for what the runner does not do fails, naming it, instead of
// running otherwise than its spec says.
func TestWhatThePodRunnerDoesNotServeIsRefused(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c",
		LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz"}}}}}}}
	require.NoError(t, unsupported(pod))
	pod.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}}
	pod.Spec.Containers[0].EnvFrom = []corev1.EnvFromSource{{}}
	pod.Spec.InitContainers = []corev1.Container{{Name: "init"}}
	err := unsupported(pod)
	for _, what := range []string{"initContainers", "c: envFrom", "c: probes other than httpGet"} {
		assert.ErrorContains(t, err, what)
	}
}
