// Package policies is NovaCron's policy engine: it compiles the Rego of every
// VirtualMachinePolicy (with the shared helper library embedded here) and
// answers the three decision points, admission, placement and migration, with
// prepared queries that are safe to share between goroutines. The input and
// output of each decision point are written down in README.md.
package policies

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

// library holds the shared helper modules (package novacron.lib) every policy
// may import, and the built-in policies shipped as VirtualMachinePolicies.
//
//go:embed library
var library embed.FS

// The rules each decision point reads from a policy's package.
var decisionRules = map[novacronv1.DecisionPoint][]string{
	novacronv1.DecisionAdmission: {"deny", "warn"},
	novacronv1.DecisionPlacement: {"deny_node", "node_score"},
	novacronv1.DecisionMigration: {"deny_migration"},
}

// EvalTimeout bounds one policy's evaluation for one request: a slow policy,
// or one whose cost a tenant's object amplifies (thousands of tolerations),
// must not stall admission or the scheduler's single scheduling loop. Past it
// the evaluation is an error, which refuses the request (fails closed).
var EvalTimeout = 250 * time.Millisecond

// deniedBuiltins reach outside the policy's input: the network (http.send
// would let a policy author's Rego call any address from the operator and the
// scheduler; net.lookup_ip_addr resolves names) or the process (opa.runtime
// shows its environment). Policies using them do not compile.
var deniedBuiltins = map[string]bool{"http.send": true, "net.lookup_ip_addr": true, "opa.runtime": true}

// capabilities are this OPA's builtins less deniedBuiltins.
var capabilities = func() *ast.Capabilities {
	c := ast.CapabilitiesForThisVersion()
	kept := c.Builtins[:0]
	for _, b := range c.Builtins {
		if !deniedBuiltins[b.Name] {
			kept = append(kept, b)
		}
	}
	c.Builtins = kept
	return c
}()

// Policy is one compiled VirtualMachinePolicy.
type Policy struct {
	Name        string
	Enforcement novacronv1.Enforcement
	Generation  int64
	namespaces  labels.Selector // nil: every namespace
	queries     map[novacronv1.DecisionPoint]rego.PreparedEvalQuery
	// broken is why a deny policy that never compiled has no queries; it
	// stands for the policy at its decision points (points) and fails
	// every evaluation, so what it was meant to deny is not let through.
	broken *CompileError
	points map[novacronv1.DecisionPoint]bool
}

// serves says whether the policy is evaluated at point.
func (p *Policy) serves(point novacronv1.DecisionPoint) bool {
	if p.broken != nil {
		return p.points[point]
	}
	_, ok := p.queries[point+"/0"]
	return ok
}

// Engine holds the current set of compiled policies.
type Engine struct {
	libModules map[string]*ast.Module

	mu       sync.RWMutex
	policies map[string]*Policy
}

// NewEngine compiles the helper library.
func NewEngine() (*Engine, error) {
	mods, err := LibraryModules()
	if err != nil {
		return nil, err
	}
	c := ast.NewCompiler()
	if c.Compile(mods); c.Failed() {
		return nil, fmt.Errorf("built-in policy library: %w", c.Errors)
	}
	return &Engine{libModules: mods, policies: map[string]*Policy{}}, nil
}

// LibraryModules parses the embedded helper library (library/lib/*.rego).
func LibraryModules() (map[string]*ast.Module, error) {
	return parseEmbedded("library/lib", false)
}

// BuiltinPolicies returns the Rego of the built-in policies by file name.
func BuiltinPolicies() (map[string]string, error) {
	out := map[string]string{}
	err := fs.WalkDir(library, "library/builtin", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".rego") || strings.HasSuffix(p, "_test.rego") {
			return err
		}
		b, err := library.ReadFile(p)
		out[strings.TrimSuffix(path.Base(p), ".rego")] = string(b)
		return err
	})
	return out, err
}

func parseEmbedded(dir string, withTests bool) (map[string]*ast.Module, error) {
	mods := map[string]*ast.Module{}
	err := fs.WalkDir(library, dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".rego") || (!withTests && strings.HasSuffix(p, "_test.rego")) {
			return err
		}
		b, err := library.ReadFile(p)
		if err != nil {
			return err
		}
		m, err := ast.ParseModuleWithOpts(p, string(b), ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			return err
		}
		mods[p] = m
		return nil
	})
	return mods, err
}

// CompileError is a policy that does not compile; its message gives each
// problem with its line and column.
type CompileError struct {
	Policy string
	Errors []string
}

func (e *CompileError) Error() string {
	return fmt.Sprintf("policy %s does not compile: %s", e.Policy, strings.Join(e.Errors, "; "))
}

func compileErrorFrom(name string, err error) *CompileError {
	ce := &CompileError{Policy: name}
	var astErrs ast.Errors
	if errors.As(err, &astErrs) {
		for _, e := range astErrs {
			if e.Location != nil {
				ce.Errors = append(ce.Errors, fmt.Sprintf("line %d, column %d: %s", e.Location.Row, e.Location.Col, e.Message))
			} else {
				ce.Errors = append(ce.Errors, e.Message)
			}
		}
	}
	if len(ce.Errors) == 0 {
		ce.Errors = []string{err.Error()}
	}
	return ce
}

// Compile compiles a VirtualMachinePolicy without installing it.
func (e *Engine) Compile(ctx context.Context, p *novacronv1.VirtualMachinePolicy) (*Policy, error) {
	file := "policy/" + p.Name + ".rego"
	mod, err := ast.ParseModuleWithOpts(file, p.Spec.Rego, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		return nil, compileErrorFrom(p.Name, err)
	}
	if mod.Package.Path.String() == "data.novacron.lib" {
		return nil, &CompileError{Policy: p.Name, Errors: []string{"package novacron.lib is the built-in helper library; choose another package"}}
	}
	mods := make(map[string]*ast.Module, len(e.libModules)+1)
	for k, v := range e.libModules {
		mods[k] = v
	}
	mods[file] = mod
	compiler := ast.NewCompiler().WithCapabilities(capabilities)
	if compiler.Compile(mods); compiler.Failed() {
		return nil, compileErrorFrom(p.Name, compiler.Errors)
	}
	defined := map[string]bool{}
	for _, r := range mod.Rules {
		if ref := r.Head.Ref(); len(ref) > 0 {
			defined[ref[0].Value.String()] = true
		}
	}
	out := &Policy{Name: p.Name, Enforcement: p.Spec.Enforcement, Generation: p.Generation, queries: map[novacronv1.DecisionPoint]rego.PreparedEvalQuery{}}
	if out.Enforcement == "" {
		out.Enforcement = novacronv1.EnforcementDeny
	}
	if sel := p.Spec.NamespaceSelector; sel != nil {
		if out.namespaces, err = metav1.LabelSelectorAsSelector(sel); err != nil {
			return nil, &CompileError{Policy: p.Name, Errors: []string{"spec.namespaceSelector: " + err.Error()}}
		}
	}
	for _, point := range p.Spec.DecisionPoints {
		var parts []string
		for _, rule := range decisionRules[point] {
			if defined[rule] {
				parts = append(parts, fmt.Sprintf("%s := %s.%s", rule, mod.Package.Path, rule))
			}
		}
		if len(parts) == 0 {
			return nil, &CompileError{Policy: p.Name, Errors: []string{fmt.Sprintf("decision point %s reads the rules %s, and the policy defines none of them", point, strings.Join(decisionRules[point], " or "))}}
		}
		// Each rule is queried on its own so a missing one is not the whole
		// query undefined.
		for i, part := range parts {
			// Strict: a builtin that fails (units.parse_bytes of "1u") is an
			// error, not an undefined value that lets a deny rule pass.
			q, err := rego.New(rego.Query(part), rego.Compiler(compiler), rego.Capabilities(capabilities), rego.StrictBuiltinErrors(true)).PrepareForEval(ctx)
			if err != nil {
				return nil, compileErrorFrom(p.Name, err)
			}
			out.queries[point+novacronv1.DecisionPoint(fmt.Sprintf("/%d", i))] = q
		}
	}
	return out, nil
}

// Upsert compiles the policy and, when it compiles, makes it current. When it
// does not, the last good version of the policy stays in force and the
// CompileError says why; a deny policy with no good version (it never
// compiled: made while the webhook was off, or by an older operator whose
// Rego this one refuses) fails closed: every evaluation it covers is an
// error naming it, until it is fixed or deleted.
func (e *Engine) Upsert(ctx context.Context, p *novacronv1.VirtualMachinePolicy) error {
	compiled, err := e.Compile(ctx, p)
	var ce *CompileError
	if errors.As(err, &ce) {
		e.holdBroken(p, ce)
	}
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.policies[p.Name] = compiled
	return nil
}

// holdBroken stands a policy that does not compile in for itself, unless a
// good version of it is in force; dryrun and warn policies deny nothing, so
// a broken one is left out.
func (e *Engine) holdBroken(p *novacronv1.VirtualMachinePolicy, ce *CompileError) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if old := e.policies[p.Name]; old != nil && old.broken == nil {
		return
	}
	if p.Spec.Enforcement != "" && p.Spec.Enforcement != novacronv1.EnforcementDeny {
		delete(e.policies, p.Name)
		return
	}
	held := &Policy{Name: p.Name, Enforcement: novacronv1.EnforcementDeny, Generation: p.Generation, broken: ce, points: map[novacronv1.DecisionPoint]bool{}}
	for _, point := range p.Spec.DecisionPoints {
		held.points[point] = true
	}
	if sel := p.Spec.NamespaceSelector; sel != nil {
		// A selector that does not parse covers every namespace: closed.
		held.namespaces, _ = metav1.LabelSelectorAsSelector(sel)
	}
	e.policies[p.Name] = held
}

// Remove drops a policy.
func (e *Engine) Remove(name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.policies, name)
}

// Policies lists the names and generations of the compiled policies in force.
func (e *Engine) Policies() map[string]int64 {
	e.mu.RLock()
	defer e.mu.RUnlock()
	out := make(map[string]int64, len(e.policies))
	for n, p := range e.policies {
		if p.broken == nil {
			out[n] = p.Generation
		}
	}
	return out
}

// Serves says whether any policy serves the decision point, so callers can
// skip building its input.
func (e *Engine) Serves(point novacronv1.DecisionPoint) bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	for _, p := range e.policies {
		if p.serves(point) {
			return true
		}
	}
	return false
}

// snapshot returns the policies serving a decision point, in name order.
func (e *Engine) snapshot(point novacronv1.DecisionPoint) []*Policy {
	e.mu.RLock()
	defer e.mu.RUnlock()
	var out []*Policy
	for _, p := range e.policies {
		if p.serves(point) {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// eval runs a policy's queries for a decision point and returns rule -> value.
func (p *Policy) eval(ctx context.Context, point novacronv1.DecisionPoint, input ast.Value) (map[string]any, error) {
	if p.broken != nil {
		return nil, fmt.Errorf("%w; it never compiled, so it refuses everything it covers until it is fixed or deleted", p.broken)
	}
	ctx, cancel := context.WithTimeout(ctx, EvalTimeout)
	defer cancel()
	out := map[string]any{}
	for i := 0; ; i++ {
		q, ok := p.queries[point+novacronv1.DecisionPoint(fmt.Sprintf("/%d", i))]
		if !ok {
			return out, nil
		}
		rs, err := q.Eval(ctx, rego.EvalParsedInput(input))
		if err != nil && ctx.Err() != nil {
			return nil, fmt.Errorf("evaluation took longer than %s", EvalTimeout)
		}
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			for k, v := range r.Bindings {
				out[k] = v
			}
		}
	}
}

func observe(policy string, point novacronv1.DecisionPoint, result string, start time.Time) {
	evaluations.WithLabelValues(policy, string(point), result).Inc()
	evalDuration.WithLabelValues(string(point)).Observe(time.Since(start).Seconds())
}
