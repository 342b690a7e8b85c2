package vmplacement

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	fwk "k8s.io/kube-scheduler/framework"

	"github.com/novacron/operator/devices"
)

// Score ranks a node for the VM: the scoring strategy on the node's vCPU and
// memory use after placement, the device-fragmentation score, and the
// placement policies' node_score.
func (p *Plugin) Score(ctx context.Context, state fwk.CycleState, pod *corev1.Pod, ni fwk.NodeInfo) (int64, *fwk.Status) {
	s, st := readState(state)
	if st != nil {
		return 0, st
	}
	e, err := p.hypervisorEntry(ni.Node().Name)
	if err != nil {
		return 0, nil
	}
	// Cheap: the node's use is cached by its generation (see podUsage).
	use := p.usage(s, e, ni)
	capCPU, capMem := e.capCPU, e.capMem
	cpu := frac(use.vcpus+s.vcpus, capCPU)
	mem := frac(use.memBytes+s.memBytes, capMem)
	var strategy float64
	switch p.args.ScoringStrategy {
	case Pack:
		strategy = (cpu + mem) / 2
	case Balanced:
		strategy = 1 - abs(cpu-mem)
	default: // Spread
		strategy = 1 - (cpu+mem)/2
	}
	frag := fragmentation(&s.req, e, use)
	w := float64(*p.args.FragmentationWeight)
	score := (strategy*100 + w*frag) / (1 + w)
	return int64(score) + s.scores[ni.Node().Name], nil
}

// fragmentation scores 0-100 how well the VM's device request fits the node's
// free devices: 100 when it takes exactly what is free (best fit), less when it
// would break up a larger free set another VM could need. A VM without devices
// prefers nodes without free devices, leaving those for VMs that need them.
func fragmentation(req *devices.Request, e *hvEntry, use nodeUse) float64 {
	if !req.HasDevices() {
		if e.devices == 0 || e.devices == use.devices.Len() {
			return 100
		}
		return 100 * float64(use.devices.Len()) / float64(e.devices)
	}
	free := devices.FreeMatching(req, e.hv, use.devices)
	n := 0
	for _, g := range req.GPUs {
		n += g.Count
	}
	n += len(req.VFs)
	if free == 0 {
		return 0
	}
	return 100 * float64(min(n, free)) / float64(free)
}

// ScoreExtensions normalises the scores (policy scores can push them out of
// 0-100).
func (p *Plugin) ScoreExtensions() fwk.ScoreExtensions { return p }

// NormalizeScore scales the node scores into the framework's range.
func (p *Plugin) NormalizeScore(_ context.Context, _ fwk.CycleState, _ *corev1.Pod, scores fwk.NodeScoreList) *fwk.Status {
	if len(scores) == 0 {
		return nil
	}
	lo, hi := scores[0].Score, scores[0].Score
	for _, s := range scores {
		lo, hi = min(lo, s.Score), max(hi, s.Score)
	}
	if lo >= fwk.MinNodeScore && hi <= fwk.MaxNodeScore {
		return nil
	}
	for i := range scores {
		if hi == lo {
			scores[i].Score = fwk.MaxNodeScore
			continue
		}
		scores[i].Score = (scores[i].Score - lo) * fwk.MaxNodeScore / (hi - lo)
	}
	return nil
}

func frac(used, capacity int64) float64 {
	if capacity <= 0 {
		return 1
	}
	f := float64(used) / float64(capacity)
	if f > 1 {
		return 1
	}
	return f
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}
