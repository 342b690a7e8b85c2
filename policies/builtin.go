package policies

import (
	"fmt"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

// Builtins returns the built-in policies as the VirtualMachinePolicy objects
// they ship as (manifests/policies/). Each .rego file under library/builtin
// says its description, decision points and enforcement in header comments:
//
//	# novacron:description ...
//	# novacron:decisionPoints admission,migration
//	# novacron:enforcement warn
func Builtins() ([]*novacronv1.VirtualMachinePolicy, error) {
	sources, err := BuiltinPolicies()
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(sources))
	for n := range sources {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []*novacronv1.VirtualMachinePolicy
	for _, name := range names {
		src := sources[name]
		p := &novacronv1.VirtualMachinePolicy{
			TypeMeta:   metav1.TypeMeta{APIVersion: novacronv1.GroupVersion.String(), Kind: "VirtualMachinePolicy"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"novacron.io/builtin": "true"}},
			Spec:       novacronv1.VirtualMachinePolicySpec{Rego: src},
		}
		for _, line := range strings.Split(src, "\n") {
			key, value, ok := strings.Cut(strings.TrimPrefix(line, "# novacron:"), " ")
			if !ok || !strings.HasPrefix(line, "# novacron:") {
				continue
			}
			switch key {
			case "description":
				p.Spec.Description = value
			case "enforcement":
				p.Spec.Enforcement = novacronv1.Enforcement(value)
			case "decisionPoints":
				for _, d := range strings.Split(value, ",") {
					p.Spec.DecisionPoints = append(p.Spec.DecisionPoints, novacronv1.DecisionPoint(strings.TrimSpace(d)))
				}
			}
		}
		if len(p.Spec.DecisionPoints) == 0 || p.Spec.Enforcement == "" {
			return nil, fmt.Errorf("built-in policy %s: its header must give novacron:decisionPoints and novacron:enforcement", name)
		}
		out = append(out, p)
	}
	return out, nil
}
