package migration

import (
	"math"
	"sort"
)

// The rebalance planner decides which VMs to move so that no node is loaded
// above a threshold, with as few and as cheap migrations as possible. The
// rebalancer controller feeds it the cluster and turns its moves into
// VirtualMachineMigrations; the simulation test runs it at scale against a
// descheduler-style baseline.

// Node is a node's room for VMs and what its VMs take, in the one capacity
// model (Resources).
type Node struct {
	Name     string
	CPUModel string
	// Capacity is what VMs may take; Used what its VMs take (requested, or
	// measured).
	Capacity, Used Resources
	// Target is false for nodes no VM may move to (cordoned, unreachable).
	Target bool
}

// Utilisation is the node's load by its dominant resource, 0..1+.
func (n *Node) Utilisation() float64 { return n.Used.Load(n.Capacity) }

// VM is a VM that could move.
type VM struct {
	Key  string
	Node string
	// Size is what the VM takes from its node.
	Size Resources
	// DirtyRate in bytes/s, when measured: a busy guest costs more to move.
	DirtyRate float64
	// Movable is false for VMs that cannot move now (blockers, cooldown,
	// a policy veto).
	Movable bool
}

// Cost is what moving the VM costs: the memory to copy, plus what its guest
// dirties during a transfer of that size (at about 1 GiB/s).
func (v *VM) Cost() float64 {
	return v.Size.Memory * (1 + v.DirtyRate/(1<<30))
}

// RebalanceConfig is the band nodes should be kept in.
type RebalanceConfig struct {
	// High is the utilisation above which a node is unloaded; nodes are
	// unloaded down to Target (< High: the hysteresis that keeps a node from
	// crossing High again with its next VM). Targets take VMs only up to
	// Target.
	High, Target float64
	// MaxMoves caps one round's moves (0: no cap).
	MaxMoves int
}

// Move is one planned migration.
type Move struct {
	VM, From, To string
}

// Plan picks the moves that bring every node at or below cfg.High, unloading
// each hot node (hottest first) down to cfg.Target with the fewest, cheapest
// VMs: the cheapest single VM whose departure suffices, else the VM that
// removes the most load (the cheaper of equals), again. Each goes to the least loaded
// node with the same CPU model that stays within cfg.Target with it. Inputs
// are not changed.
func Plan(nodes []Node, vms []VM, cfg RebalanceConfig) []Move {
	ns := make(map[string]*Node, len(nodes))
	order := make([]*Node, 0, len(nodes))
	for i := range nodes {
		n := nodes[i]
		ns[n.Name] = &n
		order = append(order, &n)
	}
	byNode := map[string][]*VM{}
	for i := range vms {
		v := vms[i]
		if v.Movable {
			byNode[v.Node] = append(byNode[v.Node], &v)
		}
	}
	sort.SliceStable(order, func(i, j int) bool { return order[i].Utilisation() > order[j].Utilisation() })
	targets := newTargets(order)

	var moves []Move
	for _, hot := range order {
		if hot.Utilisation() <= cfg.High {
			break
		}
		cands := byNode[hot.Name]
		for hot.Utilisation() > cfg.Target && len(cands) > 0 {
			if cfg.MaxMoves > 0 && len(moves) >= cfg.MaxMoves {
				return moves
			}
			i, to := pick(hot, cands, targets, cfg)
			if i < 0 {
				break // nothing left here fits anywhere
			}
			v := cands[i]
			cands = append(cands[:i:i], cands[i+1:]...)
			hot.Used = hot.Used.Minus(v.Size)
			to.Used = to.Used.Plus(v.Size)
			moves = append(moves, Move{VM: v.Key, From: hot.Name, To: to.Name})
		}
	}
	return moves
}

// pick chooses the next VM to move off hot and where to.
func pick(hot *Node, cands []*VM, t *targets, cfg RebalanceConfig) (int, *Node) {
	// The cheapest VM that alone brings the node to Target.
	best, bestTo := -1, (*Node)(nil)
	for i, v := range cands {
		if hot.Used.Minus(v.Size).Load(hot.Capacity) > cfg.Target {
			continue
		}
		if best >= 0 && v.Cost() >= cands[best].Cost() {
			continue
		}
		if to := t.find(hot, v, cfg.Target); to != nil {
			best, bestTo = i, to
		}
	}
	if best >= 0 {
		return best, bestTo
	}
	// Otherwise the one that removes the most load (the fewest moves), the
	// cheaper of equals first.
	load := func(v *VM) float64 { return v.Size.Load(hot.Capacity) }
	idx := make([]int, len(cands))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool {
		va, vb := cands[idx[a]], cands[idx[b]]
		if la, lb := load(va), load(vb); la != lb {
			return la > lb
		}
		return va.Cost() < vb.Cost()
	})
	for _, i := range idx {
		if to := t.find(hot, cands[i], cfg.Target); to != nil {
			return i, to
		}
	}
	return -1, nil
}

// targets finds the least loaded node that takes a VM.
type targets struct {
	nodes []*Node
}

func newTargets(all []*Node) *targets {
	t := &targets{}
	for _, n := range all {
		if n.Target {
			t.nodes = append(t.nodes, n)
		}
	}
	return t
}

// find is the least loaded node other than from, with from's CPU model, that
// stays within limit with v.
func (t *targets) find(from *Node, v *VM, limit float64) *Node {
	var best *Node
	bestU := math.Inf(1)
	for _, n := range t.nodes {
		if n == from || n.CPUModel != from.CPUModel {
			continue
		}
		u := n.Used.Plus(v.Size).Load(n.Capacity)
		if u <= limit && u < bestU {
			best, bestU = n, u
		}
	}
	return best
}

// Baseline is the descheduler's LowNodeUtilization way, for comparison: from
// every node above cfg.High, evict VMs in their listed order until it is at or
// below cfg.High, each to the least loaded node that stays within cfg.High.
func Baseline(nodes []Node, vms []VM, cfg RebalanceConfig) []Move {
	ns := make([]*Node, 0, len(nodes))
	for i := range nodes {
		n := nodes[i]
		ns = append(ns, &n)
	}
	t := newTargets(ns)
	byNode := map[string][]*VM{}
	for i := range vms {
		v := vms[i]
		if v.Movable {
			byNode[v.Node] = append(byNode[v.Node], &v)
		}
	}
	var moves []Move
	for _, hot := range ns {
		for _, v := range byNode[hot.Name] {
			if hot.Utilisation() <= cfg.High {
				break
			}
			to := t.find(hot, v, cfg.High)
			if to == nil {
				continue
			}
			hot.Used = hot.Used.Minus(v.Size)
			to.Used = to.Used.Plus(v.Size)
			moves = append(moves, Move{VM: v.Key, From: hot.Name, To: to.Name})
		}
	}
	return moves
}

// Apply returns the nodes as they are after the moves.
func Apply(nodes []Node, vms []VM, moves []Move) []Node {
	out := append([]Node(nil), nodes...)
	idx := map[string]int{}
	for i, n := range out {
		idx[n.Name] = i
	}
	size := map[string]*VM{}
	for i := range vms {
		size[vms[i].Key] = &vms[i]
	}
	for _, m := range moves {
		v := size[m.VM]
		from, to := &out[idx[m.From]], &out[idx[m.To]]
		from.Used = from.Used.Minus(v.Size)
		to.Used = to.Used.Plus(v.Size)
	}
	return out
}
