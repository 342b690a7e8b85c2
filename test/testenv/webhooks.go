package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/novacron/operator/operator/manager"
	"github.com/novacron/operator/operator/provider"
)

// RunOperatorWithWebhooks runs the operator with its webhook server where the
// API server expects it (WithWebhooks), serving the self-signed certificate
// it makes for local runs in dir; the webhook configurations then trust its
// CA, as cert-manager's injection would do.
func (e *Env) RunOperatorWithWebhooks(dir string, opts manager.Options, hypervisors provider.Connector) (stop func(), err error) {
	certDir := filepath.Join(dir, "webhook-certs")
	opts.Webhooks = true
	opts.WebhookHost, opts.WebhookPort, opts.WebhookCertDir = e.WebhookHost, e.WebhookPort, certDir
	opts.WebhookSelfSignedHosts = []string{e.WebhookHost}
	stop, _, err = e.RunOperator(opts, hypervisors)
	if err != nil {
		return nil, err
	}
	if err := e.trustCA(filepath.Join(certDir, "ca.crt")); err != nil {
		stop()
		return nil, fmt.Errorf("trusting the operator's CA: %w", err)
	}
	return stop, nil
}

// trustCA puts the CA into every NovaCron webhook's caBundle.
func (e *Env) trustCA(file string) error {
	ca, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	ctx := context.Background()
	m := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := e.Client.Get(ctx, client.ObjectKey{Name: "novacron-mutating-webhook"}, m); err != nil {
		return err
	}
	for i := range m.Webhooks {
		m.Webhooks[i].ClientConfig.CABundle = ca
	}
	if err := e.Client.Update(ctx, m); err != nil {
		return err
	}
	v := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	if err := e.Client.Get(ctx, client.ObjectKey{Name: "novacron-validating-webhook"}, v); err != nil {
		return err
	}
	for i := range v.Webhooks {
		v.Webhooks[i].ClientConfig.CABundle = ca
	}
	return e.Client.Update(ctx, v)
}

// InstallPolicies applies manifests/policies, as `kubectl apply -f
// manifests/policies/` does, once the webhook server (which validates them)
// answers.
func (e *Env) InstallPolicies(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := e.Kubectl(ctx, "apply", "-f", filepath.Join(e.RepoRoot, "manifests", "policies"))
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("installing the built-in policies: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
