package discovery

import (
	"bytes"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

// Report is what the node would publish, as YAML objects (the Hypervisor's
// status, then the ResourceSlices), headed by comments naming each device
// discovery left out and why: `novacron-node --once --dry-run -o yaml`.
func Report(node, sysfsRoot string, inv Inventory) ([]byte, error) {
	var out bytes.Buffer
	for _, s := range inv.Skipped {
		addr := s.PCIAddress
		if addr == "" {
			addr = "config"
		}
		fmt.Fprintf(&out, "# not offered: %s: %s\n", addr, s.Why)
	}
	// Only the status: the spec is the platform team's, not the agent's.
	hv := struct {
		metav1.TypeMeta   `json:",inline"`
		metav1.ObjectMeta `json:"metadata"`
		Status            novacronv1.HypervisorStatus `json:"status"`
	}{
		TypeMeta:   metav1.TypeMeta{APIVersion: novacronv1.GroupVersion.String(), Kind: "Hypervisor"},
		ObjectMeta: metav1.ObjectMeta{Name: node},
		Status:     HypervisorStatus(inv),
	}
	slices, err := ResourceSlices(node, sysfsRoot, inv)
	if err != nil {
		return nil, err
	}
	objs := []any{hv}
	for _, s := range slices {
		objs = append(objs, s)
	}
	for i, obj := range objs {
		b, err := yaml.Marshal(obj)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			out.WriteString("---\n")
		}
		out.Write(bytes.ReplaceAll(b, []byte("  creationTimestamp: null\n"), nil))
	}
	return out.Bytes(), nil
}
