package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

const graphFns = `app: g
functions:
  a: {builtin: upper}
  b: {builtin: upper}
  c: {builtin: upper}
  d: {builtin: upper}
  j: {builtin: upper}
chains:
  x:
    route: /x
`

// parseGraph parses an app whose chain x has the given steps: (written as
// YAML lines indented under it); the steps start at line 12.
func parseGraph(t *testing.T, steps string) (*App, error) {
	t.Helper()
	y := graphFns + "    steps:\n"
	for _, l := range strings.Split(strings.Trim(steps, "\n"), "\n") {
		y += "      " + strings.TrimPrefix(l, "\t\t\t") + "\n"
	}
	return Parse("spry.yaml", []byte(y), "/x", builtins)
}

func TestGraph(t *testing.T) {
	t.Parallel()
	a, err := parseGraph(t, `
			a: [b, c, d]
			b: j
			c: {function: a, next: j}
			d: {choose: [j, e]}
			e: {function: b, next: j}
			j: {join: 2, wait: 50ms, next: f}
			f: {function: c}
`)
	if err != nil {
		t.Fatal(err)
	}
	c := a.Chains[0]
	want := []Step{
		{Name: "a", Fn: 0, Line: 12, Next: []int{1, 2, 3}, JoinAt: 5},
		{Name: "b", Fn: 1, Line: 13, Next: []int{5}, JoinAt: -1, Depth: 1},
		{Name: "c", Fn: 0, Line: 14, Next: []int{5}, JoinAt: -1, Depth: 1},
		{Name: "d", Fn: 3, Line: 15, Next: []int{5, 4}, Choose: true, JoinAt: -1, Depth: 1},
		{Name: "e", Fn: 1, Line: 16, Next: []int{5}, JoinAt: -1, Depth: 1},
		{Name: "j", Fn: 4, Line: 17, Next: []int{6}, JoinAt: -1, Join: &Join{Quorum: 2, Wait: 50 * time.Millisecond, Of: 3}},
		{Name: "f", Fn: 2, Line: 18, JoinAt: -1},
	}
	if !reflect.DeepEqual(c.Graph, want) {
		t.Errorf("graph\n%+v\nwant\n%+v", c.Graph, want)
	}
	if !reflect.DeepEqual(c.Steps, []int{0, 1, 0, 3, 1, 4, 2}) || c.IsLine() {
		t.Errorf("steps %v, line %v", c.Steps, c.IsLine())
	}

	// Nested fan-outs, and a line as a graph.
	a, err = parseGraph(t, `
			a: [b, c]
			b: [d, e]
			d: k
			e: {function: a, next: k}
			k: {function: j, join: all, next: j}
			c: j
			j: {join: any}
`)
	if err != nil {
		t.Fatal(err)
	}
	g := a.Chains[0].Graph
	if g[0].JoinAt != 6 || g[1].JoinAt != 4 || g[2].Depth != 2 || g[4].Depth != 1 || g[4].Join.Ordinal != 0 ||
		g[6].Join.Ordinal != 1 || g[6].Join.Quorum != 1 || g[6].Join.Of != 2 {
		t.Errorf("nested: %+v", g)
	}
	a, err = parseGraph(t, "a: b\nb: c\nc:\n")
	if err != nil || !a.Chains[0].IsLine() {
		t.Fatalf("line as a graph: %v", err)
	}
}

// A graph's steps in another order (a SpryApp's spec, whose keys the API
// server sorts) enter at the step nothing leads to, as listed first.
func TestGraphAnyOrder(t *testing.T) {
	t.Parallel()
	a, err := parseGraph(t, `
			b: j
			c: j
			j: {join: all}
			s: {function: a, next: [b, c]}
`)
	if err != nil {
		t.Fatal(err)
	}
	g := a.Chains[0].Graph
	if g[0].Name != "s" || g[0].JoinAt < 0 || g[g[0].JoinAt].Name != "j" || g[1].Name != "b" {
		t.Fatalf("graph %+v: want s first, then the others in their order", g)
	}
	// Two steps nothing leads to: the order stays, and the one not listed
	// first is unreachable.
	if _, err := parseGraph(t, "b: j\nj:\na: j\n"); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("two entries: %v", err)
	}
}

// Every graph that cannot run is refused with its line and path.
func TestGraphBad(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, steps, want string }{
		{"unknown step", "a: [b, x]\nb:", `spry.yaml:12: chains.x.steps.a[1]: unknown step "x" (steps: a, b)`},
		{"unknown function", "a: b\nb: {function: zz}", `spry.yaml:13: chains.x.steps.b.function: unknown function "zz" (functions: a, b, c, d, j)`},
		{"step not a function", "a: q\nq:", `spry.yaml:13: chains.x.steps.q: no function "q" (functions: a, b, c, d, j); name one with function:`},
		{"cycle", "a: b\nb: c\nc: a", `spry.yaml:14: chains.x.steps.c: a cycle: a → b → c → a (a request would never end)`},
		{"self loop", "a: {next: a}", `spry.yaml:12: chains.x.steps.a.next: a cycle: a → a (a request would never end)`},
		{"unreachable", "a: b\nb:\nc: b", `spry.yaml:14: chains.x.steps.c: unreachable: no path leads here from a, where requests enter`},
		{"fan-out never meets", "a: [b, c]\nb:\nc:", `spry.yaml:12: chains.x.steps.a.next: the branches of this fan-out (b, c) never meet: each must lead to one join step (join: all) before the chain ends`},
		{"branch ends early", "a: [b, c]\nb: j\nc: {choose: [j, d]}\nd:\nj: {join: all}", `spry.yaml:12: chains.x.steps.a.next: the branches of this fan-out (b, c) never meet: each must lead to one join step (join: all) before the chain ends`},
		{"meeting point not a join", "a: [b, c]\nb: j\nc: j\nj:", `spry.yaml:15: chains.x.steps.j: the branches of fan-out a (b, c) meet here: make it a join (join: all, any or a count)`},
		{"join never fires", "a: b\nb: {join: all}", `spry.yaml:13: chains.x.steps.b.join: no fan-out's branches meet here: the join could never run (a join waits for the branches of the fan-out before it)`},
		{"quorum too high", "a: [b, c]\nb: j\nc: j\nj: {join: 3}", `spry.yaml:15: chains.x.steps.j.join: 3 branches must succeed, but fan-out a sends only 2: the join could never run`},
		{"bad quorum", "a: [b, c]\nb: j\nc: j\nj: {join: some}", `spry.yaml:15: chains.x.steps.j.join: want all, any or how many branches must succeed (1 or more), got "some"`},
		{"shared branch step", "a: [b, c]\nb: d\nc: d\nd: j\nj: {join: all}", `spry.yaml:15: chains.x.steps.d: the branches of fan-out a (b, c) meet here: make it a join (join: all, any or a count)`},
		{"step on two branches", "a: [b, c]\nb: {choose: [d, j]}\nc: {choose: [d, j]}\nd: j\nj: {join: all}", `spry.yaml:15: chains.x.steps.d: on two branches of fan-out a (from b and from c): the branches of a fan-out must run apart until their join j`},
		{"entering a branch", "a: {choose: [f, c]}\nf: {function: a, next: [b, d]}\nb: j\nc: b\nd: j\nj: {join: all}", `spry.yaml:15: chains.x.steps.c: leads into a branch of fan-out f from outside it: a step inside a fan-out's branches is reached only from the fan-out`},
		{"entering a join", "a: {choose: [f, j]}\nf: {function: a, next: [b, c]}\nb: j\nc: j\nj: {join: all}", `spry.yaml:12: chains.x.steps.a.choose[1]: leads into join j from outside the branches of its fan-out f: the join would get an input no fan-out sent`},
		{"wait without join", "a: {next: b, wait: 1s}\nb:", `spry.yaml:12: chains.x.steps.a.wait: only a join waits: add join: all (or a count)`},
		{"wait past timeout", "a: [b, c]\nb: j\nc: j\nj: {join: all, wait: 30s}", `spry.yaml:15: chains.x.steps.j.wait: 30s is not shorter than the chain's timeout (30s): the chain would answer 504 first`},
		{"next and choose", "a: {next: b, choose: [b]}\nb:", `spry.yaml:12: chains.x.steps.a.choose: a step has next: (all of them at once) or choose: (one of them), not both`},
		{"twice", "a: [b, b]\nb:", `spry.yaml:12: chains.x.steps.a[1]: "b" twice`},
		{"first is a join", "a: {join: all}", `spry.yaml:12: chains.x.steps.a: the first step cannot be a join: requests enter here`},
		{"bad value", "a: 3s\nb:", `spry.yaml:12: chains.x.steps.a: unknown step "3s" (steps: a, b)`},
		{"bad field", "a: {after: b}\nb:", `spry.yaml:12: chains.x.steps.a.after: unknown field (known: function, next, choose, join, wait)`},
		{"list of lists", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.steps == "" {
				_, err = Parse("spry.yaml", []byte(graphFns+"    steps: [a, [b, c], j]\n"), "/x", builtins)
				tc.want = `spry.yaml:11: chains.x.steps[1]: want a step name, got a list: a list is a line of steps; for a graph (fan-out, join, choices), make steps: a mapping of each step to what follows it`
			} else {
				_, err = parseGraph(t, tc.steps)
			}
			if err == nil {
				t.Fatal("no error")
			}
			if got := err.Error(); !strings.Contains(got, tc.want) {
				t.Fatalf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

func TestPoolMemory(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ pool, limits, want string }{
		{"{memory: 2GiB}", "{maxBody: 256MiB}", ""},
		{"{buffers: 16, bufferSize: 1MiB}", "{}", ""},
		{"{memory: 64MiB}", "{}", ""},
		{"{memory: 32MiB}", "{}", "spry.yaml:2: pool.memory: 32MiB is less than the buffers need (pool.buffers × pool.bufferSize = 64MiB)"},
		{"{memory: 128MiB}", "{maxBody: 256MiB}", "spry.yaml:3: limits.maxBody: 256MiB does not fit the pool: bodies larger than pool.bufferSize (64KiB) go to the large-extent region, and pool.memory (128MiB) leaves 64MiB for it after the buffers; raise pool.memory"},
		{"{memory: 1025GiB}", "{}", "spry.yaml:2: pool.memory: want at most 1024GiB, got 1025GiB"},
		{"{}", "{maxBody: 5GiB}", "spry.yaml:3: limits.maxBody: want at most "},
	} {
		y := "app: a\npool: " + tc.pool + "\nlimits: " + tc.limits + "\nfunctions: {f: {builtin: upper}}\nchains: {c: {route: /c, steps: [f]}}\n"
		a, err := Parse("spry.yaml", []byte(y), "", Options{})
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s %s: %v", tc.pool, tc.limits, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %s: got %v, want %s", tc.pool, tc.limits, err, tc.want)
		}
		_ = a
	}
	a, err := Parse("spry.yaml", []byte("app: a\npool: {memory: 2GiB}\nlimits: {maxBody: 256MiB}\nfunctions: {f: {builtin: upper}}\nchains: {c: {route: /c, steps: [f]}}\n"), "", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if a.Pool.Memory != 2<<30 || a.Limits.MaxBody != 256<<20 || a.Pool.ExtentBytes() != 2<<30-64<<20 {
		t.Fatalf("pool %+v limits %+v", a.Pool, a.Limits)
	}
	a, _ = Parse("spry.yaml", []byte("app: a\npool: {memory: 64MiB}\nfunctions: {f: {builtin: upper}}\nchains: {c: {route: /c, steps: [f]}}\n"), "", Options{})
	if a.Limits.MaxBody != 64<<10 {
		t.Fatalf("no extent region: maxBody %d, want the buffer size", a.Limits.MaxBody)
	}
}
