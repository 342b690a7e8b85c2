package livemigration

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/novacron/operator/migration"
	"github.com/novacron/operator/operator/usage"
)

// The rebalancer counts a node's load as the scheduler does: VMs holding a
// launcher pod there (a stopped VM holds none), by requested size or, when
// asked, measured use.
func TestTheRebalancerWeighsNodesAsTheSchedulerCounts(t *testing.T) {
	e := newEnv(t)
	for _, name := range []string{"a", "b"} {
		v := e.runningVM(t, name, "node-1")
		v.Spec.Template.Spec.Resources.CPU = 6
		v.Spec.Template.Spec.Resources.Memory = resource.MustParse("4Gi")
		require.NoError(t, e.Client.Update(t.Context(), v))
	}
	// "web" (2 vCPUs) runs there too: 14/16. A stopped 8-vCPU VM keeps its
	// disks on node-1 but no capacity.
	off := e.runningVM(t, "off", "node-1")
	off.Spec.Template.Spec.Resources.CPU = 8
	require.NoError(t, e.Client.Update(t.Context(), off))
	off.Status.LauncherPod = ""
	require.NoError(t, e.Client.Status().Update(t.Context(), off))

	measured := &usage.Store{}
	r := &Rebalancer{Client: e.Client, Namespace: "novacron-system", Config: migration.RebalanceConfig{High: 0.8, Target: 0.7}, DryRun: true, Usage: measured}
	moves, err := r.Round(t.Context())
	require.NoError(t, err)
	require.Len(t, moves, 1, "one 6-vCPU VM brings 14/16 to 8/16: %v", moves)
	assert.Equal(t, migration.Move{VM: moves[0].VM, From: "node-1", To: "node-2"}, moves[0])
	assert.Contains(t, []string{"team/a", "team/b"}, moves[0].VM)

	// By measured use the same node is idle.
	for _, name := range []string{"a", "b", "web"} {
		measured.Record(ns, name, usage.Usage{Cores: 0.5, MemoryBytes: 1 << 30})
	}
	r.Measured = true
	moves, err = r.Round(t.Context())
	require.NoError(t, err)
	assert.Empty(t, moves, "1.5 of 16 cores in use: not hot")
}
