package vmplacement

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/runtime"
)

func TestArgsDefaultsAndValidation(t *testing.T) {
	args, err := decodeArgs(nil)
	require.NoError(t, err)
	assert.Equal(t, Spread, args.ScoringStrategy)
	assert.Equal(t, int64(DefaultFragmentationWeight), *args.FragmentationWeight)

	args, err = decodeArgs(&runtime.Unknown{Raw: []byte(`{"scoringStrategy":"pack","fragmentationWeight":0}`)})
	require.NoError(t, err)
	assert.Equal(t, Pack, args.ScoringStrategy)
	assert.Zero(t, *args.FragmentationWeight, "an explicit 0 turns fragmentation scoring off")
	_, err = decodeArgs(&runtime.Unknown{Raw: []byte(`{"numaAlignment":true}`)})
	assert.Error(t, err, "NUMA alignment is the operator's claim constraint now (--numa-alignment), not the scheduler's")

	_, err = decodeArgs(&runtime.Unknown{Raw: []byte(`{"scoringStrategy":"fill"}`)})
	assert.EqualError(t, err, `VMPlacement args: scoringStrategy "fill" is not pack, spread or balanced`)
	_, err = decodeArgs(&runtime.Unknown{Raw: []byte(`{"fragmentationWeight":-1}`)})
	assert.EqualError(t, err, "VMPlacement args: fragmentationWeight must not be negative")
}
