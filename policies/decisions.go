package policies

import (
	"context"
	"fmt"
	"sort"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

// PlacementInput is `input` for placement policies: one VM and every
// candidate node, evaluated once per scheduling cycle (see README.md).
type PlacementInput struct {
	VM        any         `json:"vm"`
	Namespace Namespace   `json:"namespace"`
	Nodes     []NodeInput `json:"nodes"`
}

// NodeInput is a candidate node: its labels and its Hypervisor's status.
type NodeInput struct {
	Name       string            `json:"name"`
	Labels     map[string]string `json:"labels,omitempty"`
	Hypervisor any               `json:"hypervisor,omitempty"`
}

// PlacementResult says, per node, which policy denies it and how policies
// adjust its score.
type PlacementResult struct {
	// Denied maps a node to the reasons deny-enforced policies give.
	Denied map[string][]string
	// Scores maps a node to the sum of the policies' node_score for it.
	Scores map[string]int64
}

// Place evaluates the placement policies for one VM over all nodes.
func (e *Engine) Place(ctx context.Context, in PlacementInput) (PlacementResult, error) {
	res := PlacementResult{Denied: map[string][]string{}, Scores: map[string]int64{}}
	policies := e.snapshot(novacronv1.DecisionPlacement)
	if len(policies) == 0 {
		return res, nil
	}
	value, err := toValue(in)
	if err != nil {
		return res, err
	}
	for _, p := range policies {
		if p.namespaces != nil && !p.namespaces.Matches(labels.Set(in.Namespace.Labels)) {
			continue
		}
		start := time.Now()
		out, err := p.eval(ctx, novacronv1.DecisionPlacement, value)
		if err != nil {
			observe(p.Name, novacronv1.DecisionPlacement, "error", start)
			return res, fmt.Errorf("policy %s: %w", p.Name, err)
		}
		result := "allow"
		if denied, _ := out["deny_node"].(map[string]any); len(denied) > 0 {
			result = string(p.Enforcement)
			if p.Enforcement == novacronv1.EnforcementDeny {
				result = "deny"
				for node, msg := range denied {
					res.Denied[node] = append(res.Denied[node], fmt.Sprintf("policy %s: %v", p.Name, msg))
				}
			}
		}
		if scores, _ := out["node_score"].(map[string]any); p.Enforcement != novacronv1.EnforcementDryRun {
			for node, s := range scores {
				if n, ok := number(s); ok {
					res.Scores[node] += n
				}
			}
		}
		observe(p.Name, novacronv1.DecisionPlacement, result, start)
	}
	for node := range res.Denied {
		sort.Strings(res.Denied[node])
	}
	return res, nil
}

// MigrationInput is `input` for migration policies.
type MigrationInput struct {
	VM         any    `json:"vm"`
	Migration  any    `json:"migration"`
	SourceNode string `json:"sourceNode,omitempty"`
	TargetNode string `json:"targetNode,omitempty"`
	// Reason is Manual, Drain or Rebalance.
	Reason string `json:"reason,omitempty"`
}

// AllowMigration evaluates the migration policies: the reasons deny-enforced
// policies give (none means allowed) and the warnings of warn-enforced ones.
func (e *Engine) AllowMigration(ctx context.Context, in MigrationInput) (denials, warnings []string, err error) {
	policies := e.snapshot(novacronv1.DecisionMigration)
	if len(policies) == 0 {
		return nil, nil, nil
	}
	value, err := toValue(in)
	if err != nil {
		return nil, nil, err
	}
	for _, p := range policies {
		start := time.Now()
		out, err := p.eval(ctx, novacronv1.DecisionMigration, value)
		if err != nil {
			observe(p.Name, novacronv1.DecisionMigration, "error", start)
			return nil, nil, fmt.Errorf("policy %s: %w", p.Name, err)
		}
		msgs := stringSet(out["deny_migration"])
		result := "allow"
		if len(msgs) > 0 {
			result = string(p.Enforcement)
			for _, m := range msgs {
				m = fmt.Sprintf("policy %s: %s", p.Name, m)
				switch p.Enforcement {
				case novacronv1.EnforcementDeny:
					denials = append(denials, m)
				case novacronv1.EnforcementWarn:
					warnings = append(warnings, m)
				}
			}
		}
		observe(p.Name, novacronv1.DecisionMigration, result, start)
	}
	return denials, warnings, nil
}

func number(v any) (int64, bool) {
	switch n := v.(type) {
	case float64:
		return int64(n), true
	case int64:
		return n, true
	case int:
		return int64(n), true
	}
	if j, ok := v.(interface{ Int64() (int64, error) }); ok {
		n, err := j.Int64()
		return n, err == nil
	}
	return 0, false
}
