package e2e

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// everything is a namespace with VMs of every kind of feature: a plain one,
// a GPU, an SR-IOV VF with a bridge network from a NetworkAttachmentDefinition,
// a snapshot schedule and a snapshot taken.
const everything = `apiVersion: v1
kind: Namespace
metadata:
  name: everything
  labels: {novacron.io/gpu-allowed: "true"}
---
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: data
  namespace: everything
  annotations: {k8s.v1.cni.cncf.io/resourceName: intel.com/sriov_data}
spec: {config: '{"cniVersion": "0.3.1", "name": "data", "type": "sriov"}'}
---
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: apps
  namespace: everything
  annotations: {novacron.io/hypervisor-network: default}
spec: {config: '{"cniVersion": "0.3.1", "name": "apps", "type": "bridge"}'}
---
apiVersion: novacron.io/v1alpha1
kind: VirtualMachine
metadata: {name: plain, namespace: everything, labels: {owner: e2e}}
spec:
  snapshotPolicy: {schedule: "0 2 * * *", retention: 3}
  template:
    spec:
      resources: {cpu: 1, memory: 1Gi}
      image: {source: "marketplace://ubuntu-22.04-lts"}
---
apiVersion: novacron.io/v1alpha1
kind: VirtualMachine
metadata: {name: gpu, namespace: everything, labels: {owner: e2e}}
spec:
  template:
    spec:
      resources: {cpu: 1, memory: 1Gi}
      image: {source: "marketplace://ubuntu-22.04-lts"}
      devices: [{type: gpu, vendor: nvidia, model: tesla-t4, count: 1}]
---
apiVersion: novacron.io/v1alpha1
kind: VirtualMachine
metadata: {name: nics, namespace: everything, labels: {owner: e2e}}
spec:
  template:
    spec:
      resources: {cpu: 1, memory: 1Gi}
      image: {source: "marketplace://ubuntu-22.04-lts"}
      networks: [{name: apps, type: bridge}, {name: data, type: sr-iov}]
`

// Deleting a namespace finishes whatever its VMs use: kube-controller-manager
// (which novacron dev runs) deletes everything in it, the operator lets go of
// each VM once its domain and disks are gone, and no check of a VM's spec
// (its NetworkAttachmentDefinitions deleted alongside) holds that up.
func TestDeletingANamespaceWithVMsOfEveryKindFinishes(t *testing.T) {
	if os.Getenv("NOVACRON_E2E") != "1" {
		t.Skip("end-to-end: run `make test-e2e` (builds and starts `novacron dev`)")
	}
	d := startDev(t)
	d.kubectl(t, "kubectl apply -f - <<'EOF'\n"+everything+"EOF")
	for _, vm := range []string{"plain", "gpu", "nics"} {
		d.kubectl(t, "kubectl -n everything wait --for=jsonpath='{.status.phase}'=Running vm/"+vm+" --timeout=90s")
	}
	d.kubectl(t, "kubectl -n everything apply -f - <<'EOF'\napiVersion: novacron.io/v1alpha1\nkind: VirtualMachineSnapshot\nmetadata: {name: before}\nspec: {vmName: plain}\nEOF")
	d.kubectl(t, "kubectl -n everything wait --for=jsonpath='{.status.phase}'=Ready vmsnapshot/before --timeout=90s")

	d.kubectl(t, "kubectl delete namespace everything --timeout=2m")
	out := d.kubectl(t, "kubectl get namespace everything --ignore-not-found")
	assert.Empty(t, strings.TrimSpace(out), "the namespace is gone")
	out = d.kubectl(t, "kubectl get pods -A -l novacron.io/vm --no-headers")
	assert.NotContains(t, out, "everything", "no launcher pod left")
	d.stop(t)
	// The launcher pods go first; the operator does not try to make them
	// again in a namespace being deleted (and log that as an error).
	assert.NotContains(t, d.out.String(), "creating launcher pod for VM everything/")
}
