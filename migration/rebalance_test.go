package migration

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const gib = 1 << 30

func TestPlanUnloadsWithTheFewestMoves(t *testing.T) {
	nodes := []Node{
		{Name: "hot", CPUModel: "m", Capacity: Resources{VCPUs: 32, Memory: 128 * gib}, Used: Resources{VCPUs: 30, Memory: 60 * gib}, Target: true},
		{Name: "cold", CPUModel: "m", Capacity: Resources{VCPUs: 32, Memory: 128 * gib}, Used: Resources{VCPUs: 4, Memory: 8 * gib}, Target: true},
		{Name: "other-model", CPUModel: "x", Capacity: Resources{VCPUs: 32, Memory: 128 * gib}, Target: true},
	}
	vms := []VM{
		{Key: "small-1", Node: "hot", Size: Resources{VCPUs: 2, Memory: 4 * gib}, Movable: true},
		{Key: "small-2", Node: "hot", Size: Resources{VCPUs: 2, Memory: 4 * gib}, Movable: true},
		{Key: "small-3", Node: "hot", Size: Resources{VCPUs: 2, Memory: 4 * gib}, Movable: true},
		{Key: "big", Node: "hot", Size: Resources{VCPUs: 12, Memory: 24 * gib}, Movable: true},
		{Key: "bigger-but-busy", Node: "hot", Size: Resources{VCPUs: 12, Memory: 24 * gib}, DirtyRate: 2 * gib, Movable: true},
		{Key: "pinned", Node: "hot", Size: Resources{VCPUs: 16, Memory: 16 * gib}, Movable: false},
	}
	cfg := RebalanceConfig{High: 0.8, Target: 0.7}
	moves := Plan(nodes, vms, cfg)
	require.Len(t, moves, 1, "one VM suffices: %v", moves)
	assert.Equal(t, Move{VM: "big", From: "hot", To: "cold"}, moves[0], "the cheaper of the two that suffice, to the same CPU model")
	after := Apply(nodes, vms, moves)
	assert.LessOrEqual(t, after[0].Utilisation(), cfg.Target)

	// The descheduler-style baseline takes them in order: three small ones.
	base := Baseline(nodes, vms, cfg)
	assert.Len(t, base, 3)

	// Nothing above High: nothing to do. A cap bounds a round.
	assert.Empty(t, Plan(nodes[1:], vms, cfg))
	assert.Len(t, Plan(nodes, vms, RebalanceConfig{High: 0.5, Target: 0.4, MaxMoves: 1}), 1)
}

func TestPlanLeavesWhatCannotMove(t *testing.T) {
	nodes := []Node{
		{Name: "hot", CPUModel: "m", Capacity: Resources{VCPUs: 8, Memory: 32 * gib}, Used: Resources{VCPUs: 8, Memory: 8 * gib}, Target: true},
		{Name: "cordoned", CPUModel: "m", Capacity: Resources{VCPUs: 8, Memory: 32 * gib}, Target: false},
	}
	vms := []VM{{Key: "a", Node: "hot", Size: Resources{VCPUs: 4, Memory: 4 * gib}, Movable: true}, {Key: "b", Node: "hot", Size: Resources{VCPUs: 4, Memory: 4 * gib}, Movable: true}}
	assert.Empty(t, Plan(nodes, vms, RebalanceConfig{High: 0.8, Target: 0.7}), "no node may take them")
}

// cluster is a skewed cluster: a tenth of the nodes loaded 90-100%, the rest
// 35-65%, VMs of 1-16 vCPUs with 2-4 GiB per vCPU, all in a fixed order.
func cluster(nodes, vms int, seed uint64) ([]Node, []VM) {
	rng := rand.New(rand.NewPCG(seed, seed))
	ns := make([]Node, nodes)
	for i := range ns {
		ns[i] = Node{Name: fmt.Sprintf("node-%04d", i), CPUModel: "Icelake-Server", Capacity: Resources{VCPUs: 128, Memory: 512 * gib}, Target: true}
	}
	sizes := []float64{1, 1, 2, 2, 4, 4, 8}
	var out []VM
	fill := func(n *Node, goal float64) {
		for n.Utilisation() < goal && len(out) < vms {
			cpu := sizes[rng.IntN(len(sizes))]
			mem := cpu * float64(2+rng.IntN(3)) * gib
			size := Resources{VCPUs: cpu, Memory: mem}
			if n.Used.Plus(size).Load(n.Capacity) > 1 {
				break
			}
			n.Used = n.Used.Plus(size)
			out = append(out, VM{Key: fmt.Sprintf("vm-%05d", len(out)), Node: n.Name, Size: size,
				DirtyRate: float64(rng.IntN(64)) * (1 << 20), Movable: rng.IntN(20) != 0})
		}
	}
	for i := range ns {
		goal := 0.35 + 0.3*rng.Float64()
		if i%10 == 0 {
			goal = 0.9 + 0.1*rng.Float64()
		}
		fill(&ns[i], goal)
	}
	return ns, out
}

type balance struct {
	above        int
	maxU, stddev float64
}

func measure(nodes []Node, high float64) balance {
	var b balance
	var sum, sq float64
	for i := range nodes {
		u := nodes[i].Utilisation()
		if u > high+1e-9 {
			b.above++
		}
		b.maxU = max(b.maxU, u)
		sum += u
		sq += u * u
	}
	mean := sum / float64(len(nodes))
	b.stddev = math.Sqrt(sq/float64(len(nodes)) - mean*mean)
	return b
}

func cost(vms []VM, moves []Move) float64 {
	byKey := map[string]*VM{}
	for i := range vms {
		byKey[vms[i].Key] = &vms[i]
	}
	var c float64
	for _, m := range moves {
		c += byKey[m.VM].Cost()
	}
	return c
}

// The simulation in test/perf/README.md: 1,000 nodes, 20,000 VMs, skewed.
func TestSimulationAtScale(t *testing.T) {
	nodes, vms := cluster(1000, 20000, 42)
	require.Equal(t, 20000, len(vms))
	cfg := RebalanceConfig{High: 0.8, Target: 0.78}
	before := measure(nodes, cfg.High)

	ours := Plan(nodes, vms, cfg)
	base := Baseline(nodes, vms, cfg)
	got, want := measure(Apply(nodes, vms, ours), cfg.High), measure(Apply(nodes, vms, base), cfg.High)
	t.Logf("before: %d nodes above %.2f, max %.3f, stddev %.3f", before.above, cfg.High, before.maxU, before.stddev)
	t.Logf("baseline: %d moves (%.0f GiB), %d above, max %.3f, stddev %.3f", len(base), cost(vms, base)/gib, want.above, want.maxU, want.stddev)
	t.Logf("NovaCron: %d moves (%.0f GiB), %d above, max %.3f, stddev %.3f; moves ratio %.2f",
		len(ours), cost(vms, ours)/gib, got.above, got.maxU, got.stddev, float64(len(ours))/float64(len(base)))

	require.Positive(t, before.above)
	assert.Zero(t, got.above, "every node ends within the band")
	assert.LessOrEqual(t, got.above, want.above, "at least the baseline's balance")
	assert.LessOrEqual(t, got.maxU, want.maxU+1e-9)
	assert.LessOrEqual(t, float64(len(ours)), 0.7*float64(len(base)), "at most 0.7x the baseline's moves")
	assert.Equal(t, ours, Plan(nodes, vms, cfg), "deterministic")
}
