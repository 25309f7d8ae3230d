package config

import (
	"cmp"
	"fmt"
	"math/bits"
	"slices"
	"strconv"
	"strings"

	"github.com/spry-dev/spry/internal/pool"
)

// A chain's steps are a line (steps: [a, b, c]) or a graph: a mapping of
// each step to what follows it.
//
//	steps:
//	  resize: [faces, objects]          # a fan-out: both at once, sharing the output
//	  faces: merge
//	  objects: merge
//	  merge: {join: all, wait: 200ms}   # runs once both arrived (or 200ms after the fan-out)
//
// The first step is where requests enter; a step with nothing after it
// ends the chain. A step's mapping form has function: (default: the
// step's name), next: (a name or a list), choose: (alternatives the
// handler picks from with res.Next; the first by default), join: (all,
// any or a count: the step joins the branches of a fan-out) and wait:
// (how long after the fan-out a join waits before it runs with what
// arrived).
//
// Graphs are checked to be runnable: no cycles, no step the first cannot
// reach, and fan-outs structured so that every request ends once: the
// branches of a fan-out run apart (no step on two of them, nothing from
// outside leading in) and all meet at one step marked join: — the nearest
// step every path from the fan-out passes. A join that no fan-out meets
// at, or whose count is more than its fan-out sends, could never run.

func (cs *chainSpec) validateSteps(a *App, c *Chain, fnNames []string, path string, ps *problems) {
	p := path + ".steps"
	switch {
	case cs.graph.line != 0:
		if !cs.graph.bad {
			cs.validateGraph(a, c, fnNames, p, ps)
			cs.wasmInLine(a, c, p, ps)
		}
	case cs.steps.line == 0:
		ps.add(cs.line, p, "missing; want the functions to run, e.g. steps: [%s]", cmp.Or(strings.Join(fnNames[:min(len(fnNames), 2)], ", "), "fn"))
	case cs.steps.bad:
	case len(cs.steps.v) == 0 || len(cs.steps.v) > MaxSteps:
		ps.add(cs.steps.line, p, "want 1..%d steps, got %d", MaxSteps, len(cs.steps.v))
	default:
		ok := true
		for _, s := range cs.steps.v {
			i, found := a.fnIndex[s.v]
			if !found {
				ps.add(s.line, s.path, "unknown function %q (functions: %s)", s.v, list(fnNames))
				ok = false
				continue
			}
			c.Steps = append(c.Steps, i)
		}
		if !ok {
			return
		}
		for i, fn := range c.Steps {
			st := Step{Name: a.Functions[fn].Name, Fn: fn, Line: cs.steps.v[i].line, JoinAt: -1}
			if i+1 < len(c.Steps) {
				st.Next = []int{i + 1}
			}
			c.Graph = append(c.Graph, st)
		}
	}
}

// wasmInLine reports wasm: functions at steps of a graph that is not a
// line: their sandbox host runs a line of steps only.
func (cs *chainSpec) wasmInLine(a *App, c *Chain, p string, ps *problems) {
	if c.IsLine() {
		return
	}
	for _, s := range c.Graph {
		if s.Fn >= 0 && s.Fn < len(a.Functions) && a.Functions[s.Fn].Kind == Wasm {
			ps.add(s.Line, join(p, s.Name), "function %s is wasm:, which runs in a line of steps only (no fan-out, join or choose: in its chain)", a.Functions[s.Fn].Name)
		}
	}
}

// checkWaits reports joins that would wait longer than the chain may run.
func (cs *chainSpec) checkWaits(c *Chain, p string, ps *problems) {
	for i, s := range c.Graph {
		if s.Join == nil || s.Join.Wait == 0 || i >= len(cs.graph.v) {
			continue
		}
		if w := cs.graph.v[i].wait; s.Join.Wait >= c.Timeout {
			ps.add(w.line, join(join(p, s.Name), "wait"), "%s is not shorter than the chain's timeout (%s): the chain would answer 504 first", s.Join.Wait, c.Timeout)
		}
	}
}

// graph is a chain's graph while it is checked.
type graph struct {
	cs    *chainSpec
	c     *Chain
	path  string
	ps    *problems
	index map[string]int
	succ  []uint64 // successors, one bit per step
	pred  []uint64
}

func (cs *chainSpec) validateGraph(a *App, c *Chain, fnNames []string, p string, ps *problems) {
	entryFirst(cs.graph.v)
	specs := cs.graph.v
	if len(specs) == 0 || len(specs) > pool.MaxNodes {
		ps.add(cs.graph.line, p, "want 1..%d steps, got %d", pool.MaxNodes, len(specs))
		return
	}
	g := &graph{cs: cs, c: c, path: p, ps: ps, index: map[string]int{}}
	names := make([]string, len(specs))
	for i, st := range specs {
		g.index[st.name] = i
		names[i] = st.name
	}
	ok := true
	for i, st := range specs {
		sp := join(p, st.name)
		s := Step{Name: st.name, Line: st.line, JoinAt: -1, Fn: -1}
		if len(st.name) > maxName || !name.MatchString(st.name) {
			ps.add(st.line, sp, "%s is not a valid step name: want lower-case letters, digits, '-' and '_' (not '-' or '_' at either end), at most %d characters",
				strconv.Quote(st.name), maxName)
			ok = false
		}
		fn := st.name
		if f := st.function; f.ok() {
			fn = f.v
		}
		if idx, found := a.fnIndex[fn]; found {
			s.Fn = idx
		} else if !st.function.bad {
			line, fp := st.line, sp
			why := fmt.Sprintf("no function %q (functions: %s); name one with function:", fn, list(fnNames))
			if st.function.ok() {
				line, fp = st.function.line, join(sp, "function")
				why = fmt.Sprintf("unknown function %q (functions: %s)", fn, list(fnNames))
			}
			ps.add(line, fp, "%s", why)
			ok = false
		}
		if st.bad {
			ok = false
		}
		edges, key := st.edges()
		if st.choose.line != 0 {
			if st.next.line != 0 && st.next.ok() && st.choose.ok() {
				ps.add(st.choose.line, join(sp, "choose"), "a step has next: (all of them at once) or choose: (one of them), not both")
				ok = false
			}
			s.Choose = true
			if st.choose.ok() && len(st.choose.v) == 0 {
				ps.add(st.choose.line, join(sp, "choose"), "want at least one step to choose from")
				ok = false
			}
		}
		if edges.bad {
			ok = false
		}
		if len(edges.v) > pool.MaxNext {
			ps.add(edges.line, join(sp, key), "want at most %d steps, got %d", pool.MaxNext, len(edges.v))
			ok = false
		}
		for _, it := range edges.v {
			j, found := g.index[it.v]
			switch {
			case !found:
				ps.add(it.line, it.path, "unknown step %q (steps: %s)", it.v, list(names))
				ok = false
			case slices.Contains(s.Next, j):
				ps.add(it.line, it.path, "%q twice", it.v)
				ok = false
			default:
				s.Next = append(s.Next, j)
			}
		}
		switch j := st.join; {
		case j.line == 0:
		case j.bad:
			ok = false
		default:
			s.Join = &Join{}
			switch v := strings.ToLower(j.v); v {
			case "all":
			case "any":
				s.Join.Quorum = 1
			default:
				n, err := strconv.Atoi(v)
				if err != nil || n < 1 {
					ps.add(j.line, join(sp, "join"), "want all, any or how many branches must succeed (1 or more), got %s", strconv.Quote(j.v))
					ok = false
				}
				s.Join.Quorum = n
			}
		}
		if w := st.wait; w.line != 0 {
			switch {
			case w.bad:
				ok = false
			case st.join.line == 0:
				ps.add(w.line, join(sp, "wait"), "only a join waits: add join: all (or a count)")
				ok = false
			case w.v <= 0:
				ps.add(w.line, join(sp, "wait"), "want a duration above 0, got %s", w.v)
				ok = false
			case s.Join != nil:
				s.Join.Wait = w.v
			}
		}
		c.Graph = append(c.Graph, s)
		if i == 0 && s.Join != nil {
			ps.add(st.line, sp, "the first step cannot be a join: requests enter here")
			ok = false
		}
	}
	if !ok {
		c.Graph = nil
		return
	}
	for _, s := range c.Graph {
		c.Steps = append(c.Steps, s.Fn)
	}
	n := len(c.Graph)
	g.succ, g.pred = make([]uint64, n), make([]uint64, n)
	for i, s := range c.Graph {
		for _, j := range s.Next {
			g.succ[i] |= 1 << j
			g.pred[j] |= 1 << i
		}
	}
	if !g.acyclic() || !g.reachable() || !g.fanOuts() {
		c.Graph, c.Steps = nil, nil
	}
}

// entryFirst moves the entry to the front of specs when another step is
// listed first: the one step nothing leads to. The first step listed is
// where requests enter, but a mapping that went through JSON keeps no
// order — a SpryApp's spec is stored by the API server with its keys
// sorted — and in a graph that can run, the first step is the only one
// nothing leads to, so the order does not matter. When the first step
// listed has nothing leading to it, or no step or several have nothing,
// specs stay as they are (the checks below say what is wrong).
func entryFirst(specs []*stepSpec) {
	if len(specs) < 2 {
		return
	}
	led := map[string]bool{}
	for _, st := range specs {
		e, _ := st.edges()
		for _, it := range e.v {
			led[it.v] = true
		}
	}
	if !led[specs[0].name] {
		return
	}
	entry := -1
	for i, st := range specs {
		if !led[st.name] {
			if entry >= 0 {
				return
			}
			entry = i
		}
	}
	if entry > 0 {
		st := specs[entry]
		copy(specs[1:entry+1], specs[:entry])
		specs[0] = st
	}
}

// at returns step i's line and field path, for messages.
func (g *graph) at(i int) (int, string) {
	return g.c.Graph[i].Line, join(g.path, g.c.Graph[i].Name)
}

// edges returns what follows the step and the key it is under: choose:
// when the step has one (it wins over next:), else next:.
func (st *stepSpec) edges() (value[[]item], string) {
	if st.choose.line != 0 {
		return st.choose, "choose"
	}
	return st.next, "next"
}

// edgeAt returns the line and path of the edge from step i to step j.
func (g *graph) edgeAt(i, j int) (int, string) {
	e, _ := g.cs.graph.v[i].edges()
	for _, it := range e.v {
		if it.v == g.c.Graph[j].Name {
			return it.line, it.path
		}
	}
	return g.at(i)
}

func (g *graph) names(set uint64) string {
	var out []string
	for set != 0 {
		i := bits.TrailingZeros64(set)
		set &^= 1 << i
		out = append(out, g.c.Graph[i].Name)
	}
	return strings.Join(out, ", ")
}

// acyclic reports each cycle once, at the edge that closes it.
func (g *graph) acyclic() bool {
	n := len(g.c.Graph)
	state := make([]int, n) // 0 new, 1 on the path, 2 done
	var stack []int
	ok := true
	var visit func(i int)
	visit = func(i int) {
		state[i] = 1
		stack = append(stack, i)
		for _, j := range g.c.Graph[i].Next {
			switch state[j] {
			case 0:
				visit(j)
			case 1:
				k := slices.Index(stack, j)
				var cyc []string
				for _, s := range stack[k:] {
					cyc = append(cyc, g.c.Graph[s].Name)
				}
				cyc = append(cyc, g.c.Graph[j].Name)
				line, p := g.edgeAt(i, j)
				g.ps.add(line, p, "a cycle: %s (a request would never end)", strings.Join(cyc, " → "))
				ok = false
			}
		}
		stack = stack[:len(stack)-1]
		state[i] = 2
	}
	for i := range n {
		if state[i] == 0 {
			visit(i)
		}
	}
	return ok
}

// reachable reports steps the first step cannot reach.
func (g *graph) reachable() bool {
	seen := g.reach(1, 0)
	ok := true
	for i := range g.c.Graph {
		if seen&(1<<i) == 0 {
			line, p := g.at(i)
			g.ps.add(line, p, "unreachable: no path leads here from %s, where requests enter", g.c.Graph[0].Name)
			ok = false
		}
	}
	return ok
}

// order returns the steps in topological order (the graph is acyclic).
func (g *graph) order() []int {
	n := len(g.c.Graph)
	indeg := make([]int, n)
	for i := range n {
		indeg[i] = bits.OnesCount64(g.pred[i])
	}
	var q, out []int
	for i := range n {
		if indeg[i] == 0 {
			q = append(q, i)
		}
	}
	for len(q) > 0 {
		i := q[0]
		q = q[1:]
		out = append(out, i)
		for _, j := range g.c.Graph[i].Next {
			if indeg[j]--; indeg[j] == 0 {
				q = append(q, j)
			}
		}
	}
	return out
}

// fanOuts checks that every fan-out's branches meet at a join and run
// apart until then, that every join is a fan-out's, and fills JoinAt,
// Depth and the joins' ordinals.
func (g *graph) fanOuts() bool {
	n := len(g.c.Graph)
	exit := n // a virtual step after every step that ends the chain
	// Post-dominators: pdom[i] holds the steps every path from i to the
	// end passes (i included).
	pdom := make([]uint64, n+1)
	pdom[exit] = 1 << exit
	ord := g.order()
	for k := len(ord) - 1; k >= 0; k-- {
		i := ord[k]
		all := ^uint64(0)
		if len(g.c.Graph[i].Next) == 0 {
			all = pdom[exit]
		}
		for _, j := range g.c.Graph[i].Next {
			all &= pdom[j]
		}
		pdom[i] = all | 1<<i
	}
	ok := true
	joinOf := map[int]int{} // join → its fan-out
	for _, f := range ord {
		s := &g.c.Graph[f]
		if s.Choose || len(s.Next) < 2 {
			continue
		}
		line, p := g.at(f)
		p = join(p, "next")
		if nxt := g.cs.graph.v[f].next; nxt.line != 0 {
			line = nxt.line
		}
		// The nearest strict post-dominator: the one the most steps
		// post-dominate.
		j, best := -1, -1
		for d := pdom[f] &^ (1 << f); d != 0; {
			x := bits.TrailingZeros64(d)
			d &^= 1 << x
			if c := bits.OnesCount64(pdom[x]); c > best {
				j, best = x, c
			}
		}
		if j == exit || j < 0 {
			g.ps.add(line, p, "the branches of this fan-out (%s) never meet: each must lead to one join step (join: all) before the chain ends", g.names(g.succ[f]))
			ok = false
			continue
		}
		js := &g.c.Graph[j]
		if js.Join == nil {
			jl, jp := g.at(j)
			g.ps.add(jl, jp, "the branches of fan-out %s (%s) meet here: make it a join (join: all, any or a count)", s.Name, g.names(g.succ[f]))
			ok = false
			continue
		}
		if other, dup := joinOf[j]; dup {
			jl, jp := g.at(j)
			g.ps.add(jl, jp, "the branches of two fan-outs, %s and %s, meet at this join: give each its own join", g.c.Graph[other].Name, s.Name)
			ok = false
			continue
		}
		joinOf[j] = f
		s.JoinAt = j
		js.Join.Of = len(s.Next)
		if q := js.Join.Quorum; q > len(s.Next) {
			jl, jp := g.at(j)
			jl = cmp.Or(g.cs.graph.v[j].join.line, jl)
			g.ps.add(jl, join(jp, "join"), "%d branches must succeed, but fan-out %s sends only %d: the join could never run", q, s.Name, len(s.Next))
			ok = false
		}
		// Each branch: the steps reachable from its first step before
		// the join. They must be apart, and only reached from within.
		var regions []uint64
		var all uint64
		for _, b := range s.Next {
			var r uint64
			if b != j {
				r = g.region(b, j)
			}
			for k, other := range regions {
				if both := r & other; both != 0 {
					x := bits.TrailingZeros64(both)
					xl, xp := g.at(x)
					g.ps.add(xl, xp, "on two branches of fan-out %s (from %s and from %s): the branches of a fan-out must run apart until their join %s",
						s.Name, g.c.Graph[s.Next[k]].Name, g.c.Graph[b].Name, js.Name)
					ok = false
				}
			}
			regions = append(regions, r)
			all |= r
		}
		for _, r := range regions {
			for x := r; x != 0; {
				i := bits.TrailingZeros64(x)
				x &^= 1 << i
				if out := g.pred[i] &^ r &^ (1 << f); out != 0 {
					from := bits.TrailingZeros64(out)
					line, p := g.edgeAt(from, i)
					g.ps.add(line, p, "leads into a branch of fan-out %s from outside it: a step inside a fan-out's branches is reached only from the fan-out", s.Name)
					ok = false
				}
				g.c.Graph[i].Depth++
			}
		}
		if out := g.pred[j] &^ all &^ (1 << f); out != 0 {
			from := bits.TrailingZeros64(out)
			line, p := g.edgeAt(from, j)
			g.ps.add(line, p, "leads into join %s from outside the branches of its fan-out %s: the join would get an input no fan-out sent", js.Name, s.Name)
			ok = false
		}
	}
	joins := 0
	for i := range g.c.Graph {
		s := &g.c.Graph[i]
		if s.Depth > pool.MaxDepth {
			line, p := g.at(i)
			g.ps.add(line, p, "inside %d nested fan-outs; at most %d nest", s.Depth, pool.MaxDepth)
			ok = false
		}
		if s.Join == nil {
			continue
		}
		if _, met := joinOf[i]; !met && ok {
			line, p := g.at(i)
			g.ps.add(cmp.Or(g.cs.graph.v[i].join.line, line), join(p, "join"), "no fan-out's branches meet here: the join could never run (a join waits for the branches of the fan-out before it)")
			ok = false
		}
		s.Join.Ordinal = joins
		joins++
	}
	if joins > pool.MaxJoins {
		g.ps.add(g.cs.graph.line, g.path, "%d joins; a chain has at most %d", joins, pool.MaxJoins)
		ok = false
	}
	return ok
}

// region returns the steps reachable from step b without passing step j.
func (g *graph) region(b, j int) uint64 {
	return g.reach(1<<b, 1<<j)
}

// reach returns the steps in from and those reachable from them without
// entering a step in stop.
func (g *graph) reach(from, stop uint64) uint64 {
	r := from
	for frontier := r; frontier != 0; {
		var next uint64
		for f := frontier; f != 0; {
			i := bits.TrailingZeros64(f)
			f &^= 1 << i
			next |= g.succ[i]
		}
		next &^= stop
		frontier = next &^ r
		r |= next
	}
	return r
}
