// Package manifests carries the YAML in this folder inside the binaries that
// need it without a checkout: `novacron dev` installs the CRDs, webhooks,
// policies, image catalog and scheduler configuration from here (and with
// --image the Deployments and RBAC too), so what a
// developer tries is exactly what `kubectl apply -f manifests/...` installs.
package manifests

import "embed"

// FS holds every YAML file under manifests/, at its path relative to this folder
// (crd/bases/novacron.io_virtualmachines.yaml, samples/vm-basic.yaml, ...).
//
//go:embed crd/bases/*.yaml dev/crds/*.yaml images/*.yaml node/deviceclasses.yaml operator/*.yaml policies/*.yaml rbac/*.yaml samples/*.yaml scheduler/*.yaml webhook/*.yaml
var FS embed.FS
