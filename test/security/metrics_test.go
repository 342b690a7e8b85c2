package security

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Finding 14: the metrics name every tenant's VMs, their nodes and their
// use; only a caller the platform team let read them may. A tenant's own
// ServiceAccount token is refused, as is no token at all.
func TestOnlyMetricsReadersReadTheMetrics(t *testing.T) {
	ctx := context.Background()
	tenant(t, "eve-metrics", "eve")
	_, err := env.Kubectl(ctx, "apply", "-f", filepath.Join(env.RepoRoot, "manifests", "rbac", "metrics-reader.yaml"))
	require.NoError(t, err)
	cs, err := kubernetes.NewForConfig(env.Config)
	require.NoError(t, err)
	token := func(name string) string {
		t.Helper()
		_, err := cs.CoreV1().ServiceAccounts("eve-metrics").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		require.NoError(t, err)
		tr, err := cs.CoreV1().ServiceAccounts("eve-metrics").CreateToken(ctx, name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
		require.NoError(t, err)
		return tr.Status.Token
	}
	scrape := func(token string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+metricsAddr+"/metrics", nil)
		require.NoError(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // self-signed, as in dev
		resp, err := c.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}

	code, _ := scrape("")
	assert.Equal(t, http.StatusUnauthorized, code, "no token")
	code, _ = scrape(token("eve-app"))
	assert.Equal(t, http.StatusForbidden, code, "a tenant's own ServiceAccount")

	reader := token("prometheus")
	_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "eve-metrics-prometheus"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "novacron-metrics-reader"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "prometheus", Namespace: "eve-metrics"}}}, metav1.CreateOptions{})
	require.NoError(t, err)
	code, body := scrape(reader)
	assert.Equal(t, http.StatusOK, code)
	assert.True(t, strings.Contains(body, "novacron_"), "the operator's metrics")
}
