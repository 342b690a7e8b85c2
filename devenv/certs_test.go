package devenv

import (
	"crypto/x509"
	"encoding/pem"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The shipped chain: the serving certificate verifies against the CA that
// goes into the webhook configurations, for the webhook Service's names, and
// issuing it again (a renewal) leaves that CA as it is.
func TestTheShippedCertificatesAreIssuedThroughTheirCA(t *testing.T) {
	objs, err := decodeAll(scheme(), "webhook/certificate.yaml", "webhook/manifests.yaml")
	require.NoError(t, err)
	is := newIssuer(objs)
	for _, key := range []string{"novacron-system/novacron-webhook-ca", "novacron-system/novacron-webhook-cert"} {
		cert := is.certs[key]
		require.NotNil(t, cert, key)
		s, err := is.issue(cert)
		require.NoError(t, err, key)
		is.secrets[s.Namespace+"/"+s.Name] = s
	}
	serving := is.secrets["novacron-system/novacron-webhook-cert"]
	var hook client.Object
	for _, o := range objs {
		if h, ok := o.(*admissionv1.ValidatingWebhookConfiguration); ok {
			hook = h
		}
	}
	require.NotNil(t, hook)
	bundle, err := is.caBundle(hook)
	require.NoError(t, err)

	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(bundle))
	block, _ := pem.Decode(serving.Data["tls.crt"])
	leaf, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "novacron-webhook-service.novacron-system.svc"})
	require.NoError(t, err, "the serving certificate verifies against the injected CA")
	assert.False(t, leaf.IsCA)
	caBlock, _ := pem.Decode(bundle)
	ca, err := x509.ParseCertificate(caBlock.Bytes)
	require.NoError(t, err)
	assert.True(t, ca.IsCA, "the bundle is the CA, not a self-signed leaf")

	renewed, err := is.issue(is.certs["novacron-system/novacron-webhook-cert"])
	require.NoError(t, err)
	assert.NotEqual(t, serving.Data["tls.crt"], renewed.Data["tls.crt"])
	assert.Equal(t, bundle, renewed.Data["ca.crt"], "a renewal keeps the caBundle")
}

// A Certificate field the stand-in does not honour fails instead of being
// ignored.
func TestAnUnhonouredCertificateFieldIsRefused(t *testing.T) {
	cert := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
		"metadata": map[string]any{"name": "x", "namespace": "ns"},
		"spec":     map[string]any{"secretName": "x", "usages": []any{"client auth"}, "issuerRef": map[string]any{"name": "i"}},
	}}
	_, err := newIssuer([]client.Object{cert}).issue(cert)
	assert.ErrorContains(t, err, "spec.usages")
}
