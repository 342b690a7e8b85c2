#!/usr/bin/env bash
# Finishes controller-gen's webhook configurations (manifests/webhook/manifests.yaml)
# for installation: NovaCron's names, the operator's webhook Service in
# novacron-system, and cert-manager's CA injection from the serving Certificate
# in manifests/webhook/certificate.yaml.
set -euo pipefail
f=manifests/webhook/manifests.yaml
sed -i \
  -e 's/^  name: mutating-webhook-configuration$/  name: novacron-mutating-webhook\n  annotations:\n    cert-manager.io\/inject-ca-from: novacron-system\/novacron-webhook-cert/' \
  -e 's/^  name: validating-webhook-configuration$/  name: novacron-validating-webhook\n  annotations:\n    cert-manager.io\/inject-ca-from: novacron-system\/novacron-webhook-cert/' \
  -e 's/^      name: webhook-service$/      name: novacron-webhook-service/' \
  -e 's/^      namespace: system$/      namespace: novacron-system/' \
  "$f"
