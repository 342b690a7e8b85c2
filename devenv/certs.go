package devenv

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// issuer plays cert-manager for the shipped cert-manager resources
// (manifests/webhook/certificate.yaml): it issues each Certificate into its
// Secret as cert-manager would (tls.crt, tls.key, ca.crt) from its Issuer, a
// selfSigned one or a CA one, and injects a Certificate's CA into the
// webhook configurations that name it in cert-manager.io/inject-ca-from.
// cert-manager itself is not run: its binaries live in nested modules that
// `go install` refuses to build from the module proxy.
//
// It covers the fields the shipped resources use (commonName, dnsNames,
// ipAddresses, isCA, duration, privateKey, issuerRef) and refuses others, so
// a manifest change it cannot honour fails loudly instead of being ignored.
type issuer struct {
	issuers map[string]*unstructured.Unstructured
	certs   map[string]*unstructured.Unstructured
	// secrets are the issued Secrets by name, for CA Issuers and injection.
	secrets map[string]*corev1.Secret
}

func newIssuer(objs []client.Object) *issuer {
	is := &issuer{issuers: map[string]*unstructured.Unstructured{}, certs: map[string]*unstructured.Unstructured{}, secrets: map[string]*corev1.Secret{}}
	for _, o := range objs {
		u, ok := o.(*unstructured.Unstructured)
		if !ok || u.GroupVersionKind().Group != "cert-manager.io" {
			continue
		}
		switch u.GetKind() {
		case "Issuer":
			is.issuers[u.GetNamespace()+"/"+u.GetName()] = u
		case "Certificate":
			is.certs[u.GetNamespace()+"/"+u.GetName()] = u
		}
	}
	return is
}

// issueAll issues every Certificate (CA certificates first, as their
// Issuers need them) and creates their Secrets.
func (is *issuer) issueAll(ctx context.Context, c client.Client) error {
	done := map[string]bool{}
	for len(done) < len(is.certs) {
		progress := false
		for key, cert := range is.certs {
			if done[key] {
				continue
			}
			secret, err := is.issue(cert)
			if errors.Is(err, errIssuerNotReady) {
				continue
			}
			if err != nil {
				return fmt.Errorf("Certificate %s: %w", key, err)
			}
			if err := c.Create(ctx, secret); err != nil {
				return fmt.Errorf("Certificate %s: creating Secret %s: %w", key, secret.Name, err)
			}
			is.secrets[secret.Namespace+"/"+secret.Name] = secret
			done[key], progress = true, true
		}
		if !progress {
			return fmt.Errorf("certificates whose CA Issuer's Secret no Certificate makes: %d of %d issued", len(done), len(is.certs))
		}
	}
	return nil
}

var errIssuerNotReady = errors.New("the CA Issuer's Secret is not issued yet")

func (is *issuer) issue(cert *unstructured.Unstructured) (*corev1.Secret, error) {
	spec, _, _ := unstructured.NestedMap(cert.Object, "spec")
	known := map[string]bool{"secretName": true, "commonName": true, "dnsNames": true, "ipAddresses": true, "isCA": true, "duration": true, "privateKey": true, "issuerRef": true}
	for k := range spec {
		if !known[k] {
			return nil, fmt.Errorf("spec.%s: not honoured by novacron dev's stand-in for cert-manager", k)
		}
	}
	secretName, _, _ := unstructured.NestedString(spec, "secretName")
	commonName, _, _ := unstructured.NestedString(spec, "commonName")
	dnsNames, _, _ := unstructured.NestedStringSlice(spec, "dnsNames")
	ips, _, _ := unstructured.NestedStringSlice(spec, "ipAddresses")
	isCA, _, _ := unstructured.NestedBool(spec, "isCA")
	issuerName, _, _ := unstructured.NestedString(spec, "issuerRef", "name")
	if kind, _, _ := unstructured.NestedString(spec, "issuerRef", "kind"); kind != "" && kind != "Issuer" {
		return nil, fmt.Errorf("spec.issuerRef.kind %s: only namespaced Issuers are honoured", kind)
	}
	duration := 90 * 24 * time.Hour // cert-manager's default
	if d, ok, _ := unstructured.NestedString(spec, "duration"); ok {
		var err error
		if duration, err = time.ParseDuration(d); err != nil {
			return nil, fmt.Errorf("spec.duration: %w", err)
		}
	}
	key, err := privateKey(spec)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: commonName},
		DNSNames:     dnsNames,
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(duration),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	if isCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign | x509.KeyUsageCRLSign
		tmpl.ExtKeyUsage = nil
	}

	iss := is.issuers[cert.GetNamespace()+"/"+issuerName]
	if iss == nil {
		return nil, fmt.Errorf("spec.issuerRef: no Issuer %s/%s in the manifests", cert.GetNamespace(), issuerName)
	}
	parent, signer, caPEM := tmpl, crypto.Signer(key), []byte(nil)
	if _, selfSigned, _ := unstructured.NestedMap(iss.Object, "spec", "selfSigned"); !selfSigned {
		caSecret, ok, _ := unstructured.NestedString(iss.Object, "spec", "ca", "secretName")
		if !ok {
			return nil, fmt.Errorf("Issuer %s: only selfSigned and ca Issuers are honoured", issuerName)
		}
		s := is.secrets[cert.GetNamespace()+"/"+caSecret]
		if s == nil {
			return nil, errIssuerNotReady
		}
		if parent, signer, err = parseKeyPair(s.Data["tls.crt"], s.Data["tls.key"]); err != nil {
			return nil, fmt.Errorf("Issuer %s: %w", issuerName, err)
		}
		caPEM = s.Data["tls.crt"]
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if caPEM == nil {
		caPEM = certPEM // a self-signed certificate is its own CA
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: secretName, Namespace: cert.GetNamespace(),
			Annotations: map[string]string{"cert-manager.io/certificate-name": cert.GetName(), "cert-manager.io/issuer-name": issuerName}},
		Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{"tls.crt": certPEM, "tls.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), "ca.crt": caPEM},
	}, nil
}

func privateKey(spec map[string]any) (crypto.Signer, error) {
	alg, _, _ := unstructured.NestedString(spec, "privateKey", "algorithm")
	size, _, _ := unstructured.NestedInt64(spec, "privateKey", "size")
	switch alg {
	case "", "RSA":
		if size == 0 {
			size = 2048
		}
		return rsa.GenerateKey(rand.Reader, int(size))
	case "ECDSA":
		curves := map[int64]elliptic.Curve{0: elliptic.P256(), 256: elliptic.P256(), 384: elliptic.P384(), 521: elliptic.P521()}
		if curves[size] == nil {
			return nil, fmt.Errorf("spec.privateKey.size %d: not an ECDSA size", size)
		}
		return ecdsa.GenerateKey(curves[size], rand.Reader)
	}
	return nil, fmt.Errorf("spec.privateKey.algorithm %s: not honoured", alg)
}

func parseKeyPair(certPEM, keyPEM []byte) (*x509.Certificate, crypto.Signer, error) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, nil, fmt.Errorf("the CA Secret holds no PEM certificate and key")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	key, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("the CA key cannot sign")
	}
	return cert, signer, nil
}

// caBundle is what cert-manager's CA injector puts into an object annotated
// cert-manager.io/inject-ca-from: NAMESPACE/CERTIFICATE: the ca.crt of that
// Certificate's Secret. "" when the object asks for none.
func (is *issuer) caBundle(o client.Object) ([]byte, error) {
	from := o.GetAnnotations()["cert-manager.io/inject-ca-from"]
	if from == "" {
		return nil, nil
	}
	cert := is.certs[from]
	if cert == nil {
		return nil, fmt.Errorf("%s: cert-manager.io/inject-ca-from names %s, which no manifest defines", o.GetName(), from)
	}
	secretName, _, _ := unstructured.NestedString(cert.Object, "spec", "secretName")
	s := is.secrets[cert.GetNamespace()+"/"+secretName]
	if s == nil {
		return nil, fmt.Errorf("%s: Certificate %s is not issued", o.GetName(), from)
	}
	return s.Data["ca.crt"], nil
}
