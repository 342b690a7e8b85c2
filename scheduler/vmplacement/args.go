package vmplacement

import (
	"bytes"
	"encoding/json"
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	frameworkruntime "k8s.io/kubernetes/pkg/scheduler/framework/runtime"
)

// ScoringStrategy is how the plugin ranks the nodes a VM fits on by their
// vCPU and memory use after placement.
type ScoringStrategy string

// The scoring strategies.
const (
	// Pack fills nodes up: the fullest node that fits wins.
	Pack ScoringStrategy = "pack"
	// Spread uses the emptiest node.
	Spread ScoringStrategy = "spread"
	// Balanced keeps a node's vCPU and memory use even.
	Balanced ScoringStrategy = "balanced"
)

// Defaults of the plugin's args.
const (
	DefaultScoringStrategy     = Spread
	DefaultFragmentationWeight = 1
)

// Args configure the plugin (pluginConfig args in the scheduler profile).
type Args struct {
	// ScoringStrategy is pack, spread or balanced. Default spread.
	ScoringStrategy ScoringStrategy `json:"scoringStrategy,omitempty"`
	// FragmentationWeight weighs the device-fragmentation score against the
	// strategy's (both 0-100). Default 1; 0 turns it off.
	FragmentationWeight *int64 `json:"fragmentationWeight,omitempty"`
}

// SetDefaults fills in what the profile left out.
func (a *Args) SetDefaults() {
	if a.ScoringStrategy == "" {
		a.ScoringStrategy = DefaultScoringStrategy
	}
	if a.FragmentationWeight == nil {
		w := int64(DefaultFragmentationWeight)
		a.FragmentationWeight = &w
	}
}

// Validate says what in the args is wrong, naming the field.
func (a *Args) Validate() error {
	switch a.ScoringStrategy {
	case Pack, Spread, Balanced:
	default:
		return fmt.Errorf("scoringStrategy %q is not %s, %s or %s", a.ScoringStrategy, Pack, Spread, Balanced)
	}
	if *a.FragmentationWeight < 0 {
		return fmt.Errorf("fragmentationWeight must not be negative")
	}
	return nil
}

// decodeArgs reads the profile's args (none: all defaults), defaulted and
// validated.
func decodeArgs(obj runtime.Object) (Args, error) {
	var args Args
	if u, ok := obj.(*runtime.Unknown); ok {
		// Strict: a field VMPlacement no longer has (numaAlignment, now the
		// operator's --numa-alignment) must not be ignored in silence.
		dec := json.NewDecoder(bytes.NewReader(u.Raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&args); err != nil {
			return args, fmt.Errorf("%s args: %w", Name, err)
		}
	} else if obj != nil {
		if err := frameworkruntime.DecodeInto(obj, &args); err != nil {
			return args, fmt.Errorf("%s args: %w", Name, err)
		}
	}
	args.SetDefaults()
	if err := args.Validate(); err != nil {
		return args, fmt.Errorf("%s args: %w", Name, err)
	}
	return args, nil
}
