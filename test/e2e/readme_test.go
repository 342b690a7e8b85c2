package e2e

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/novacron/operator/test/testenv"
)

// block is one sh block of README.md's "Using NovaCron" section.
type block struct {
	lines []string
	// skip is what the block needs that not every environment has
	// ("cluster", "lab", "simulated": the simulated GPUs and VFs of `make
	// dev` nodes), from an <!-- e2e: cluster --> before it.
	skip string
	// until is the line a watch in the block waits for, from an
	// <!-- e2e: until REGEX --> before it.
	until *regexp.Regexp
	line  int // where it starts in README.md
}

var marker = regexp.MustCompile(`^<!-- e2e: (cluster|lab|simulated|until (.+)) -->$`)

// usingNovaCron reads the sh blocks of README.md's "Using NovaCron" section,
// in order, with what their markers say.
func usingNovaCron(t *testing.T) []block {
	t.Helper()
	root, err := testenv.RepoRoot()
	require.NoError(t, err)
	f, err := os.Open(filepath.Join(root, "README.md"))
	require.NoError(t, err)
	defer f.Close()
	var blocks []block
	var cur *block
	var pending block
	in := false
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		raw := sc.Text()
		line := strings.TrimSpace(raw)
		switch {
		case strings.HasPrefix(raw, "## "):
			in = raw == "## Using NovaCron"
		case !in:
		case cur != nil && line == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			if line != "" && !strings.HasPrefix(line, "#") {
				cur.lines = append(cur.lines, line)
			}
		case line == "```sh":
			b := pending
			b.line = n
			cur, pending = &b, block{}
		case marker.MatchString(line):
			m := marker.FindStringSubmatch(line)
			if m[2] != "" {
				pending.until = regexp.MustCompile(m[2])
			} else {
				pending.skip = m[1]
			}
		}
	}
	require.NoError(t, sc.Err())
	require.NotEmpty(t, blocks, "README.md has a \"Using NovaCron\" section with sh blocks")
	return blocks
}

// The README's runnable blocks are found, in order, with their markers; a
// block in another section is not the workflow's.
func TestTheReadmeWorkflowIsReadFromTheReadme(t *testing.T) {
	blocks := usingNovaCron(t)
	var all []string
	for _, b := range blocks {
		if b.skip == "" {
			all = append(all, b.lines...)
		}
	}
	require.Contains(t, all, "kubectl apply -f manifests/samples/vm-basic.yaml")
	require.Equal(t, "kubectl delete vm my-vm", all[len(all)-2], "deleting comes last, after everything that uses the VM")
	for _, line := range all {
		require.NotContains(t, line, "make deploy", "Install in a cluster is not part of it")
		require.NotContains(t, line, "logs deploy/", "a cluster-only command is marked and left out")
	}
	var watches int
	for _, b := range blocks {
		for _, l := range b.lines {
			if isWatch(l) {
				watches++
				require.NotNil(t, b.until, "README.md:%d: a watch says what it waits for", b.line)
			}
		}
	}
	require.Equal(t, 2, watches)
}
