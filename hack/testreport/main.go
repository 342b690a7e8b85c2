// Command testreport prints `go test -json` (from stdin) as `go test` prints
// a package list, plus what plain `go test` hides: the tests that skipped,
// each with its reason (which names the command that runs it). `make test`
// pipes its run through it, so suites that need more set-up than it does
// (the end-to-end and lab suites) say so instead of looking passed.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

type skip struct{ pkg, test, why string }

func main() {
	skips, err := report(os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testreport:", err)
		os.Exit(1)
	}
	if len(skips) > 0 {
		fmt.Println("\nSkipped (they need more than this command sets up):")
		for _, s := range skips {
			fmt.Printf("  %s %s: %s\n", s.pkg, s.test, s.why)
		}
	}
}

// report copies what `go test` would print without -v: each package's
// summary line, the output of failed tests and packages, and build errors.
// It returns the top-level tests that skipped.
func report(in io.Reader, out io.Writer) ([]skip, error) {
	tests := map[string]*strings.Builder{} // package + " " + test -> output
	pkgs := map[string]*strings.Builder{}  // package -> its own output
	var skips []skip
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			fmt.Fprintln(out, sc.Text()) // not an event: go's own message
			continue
		}
		key := e.Package + " " + e.Test
		switch {
		case e.Action == "build-output":
			fmt.Fprint(out, e.Output)
		case e.Action == "output" && e.Test != "":
			buf(tests, key).WriteString(e.Output)
		case e.Action == "output" && isSummary(e.Output):
			if p := pkgs[e.Package]; p != nil && strings.HasPrefix(e.Output, "FAIL") {
				fmt.Fprint(out, p.String())
			}
			fmt.Fprint(out, e.Output)
		case e.Action == "output":
			buf(pkgs, e.Package).WriteString(e.Output)
		case e.Action == "fail" && e.Test != "":
			fmt.Fprint(out, buf(tests, key).String())
		case e.Action == "skip" && e.Test != "" && !strings.Contains(e.Test, "/"):
			skips = append(skips, skip{pkg: strings.TrimPrefix(e.Package, module(e.Package)), test: e.Test, why: reason(buf(tests, key).String())})
		}
		if e.Action == "pass" || e.Action == "skip" {
			delete(tests, key)
		}
	}
	return skips, sc.Err()
}

func buf(m map[string]*strings.Builder, k string) *strings.Builder {
	if m[k] == nil {
		m[k] = &strings.Builder{}
	}
	return m[k]
}

// isSummary says whether a package's output line is go test's verdict on it.
func isSummary(line string) bool {
	for _, p := range []string{"ok  \t", "FAIL\t", "?   \t"} {
		if strings.HasPrefix(line, p) {
			return true
		}
	}
	return false
}

// reason is what a skipped test said, without the test runner's own lines.
func reason(output string) string {
	var lines []string
	for _, l := range strings.Split(output, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "=== ") || strings.HasPrefix(l, "--- SKIP") {
			continue
		}
		// "file_test.go:12: message" -> "message"
		if i := strings.Index(l, ".go:"); i >= 0 {
			if j := strings.Index(l[i+4:], ": "); j >= 0 {
				l = l[i+4+j+2:]
			}
		}
		lines = append(lines, l)
	}
	return strings.Join(lines, " ")
}

// module is this module's path and a slash, so the report says test/e2e
// rather than the whole import path.
func module(string) string {
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Path != "" {
		return info.Main.Path + "/"
	}
	return ""
}
