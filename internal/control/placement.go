package control

import (
	"container/heap"
	"fmt"
	"math"
	"slices"
)

// Resource indices of a [Resources] vector.
const (
	CPU          = 0 // millicores
	Memory       = 1 // bytes
	NumResources = 2
)

// Resources is an amount of each resource: CPU in millicores, memory in
// bytes.
type Resources [NumResources]int64

// Add returns r + k·o.
func (r Resources) Add(o Resources, k int64) Resources {
	for i := range r {
		r[i] += k * o[i]
	}
	return r
}

func (r Resources) fits(free Resources) bool {
	for i := range r {
		if r[i] > free[i] {
			return false
		}
	}
	return true
}

// Placement strategies: two-stage DRF with a node score, and the
// spreading baseline.
const (
	StrategyAlignment = "drf-alignment"
	StrategyWorstFit  = "drf-worstfit"
	StrategyBestFit   = "drf-bestfit"
	StrategySpread    = "spread"
)

// Strategies lists every strategy, DRF ones first.
var Strategies = []string{StrategyAlignment, StrategyWorstFit, StrategyBestFit, StrategySpread}

const (
	alignment = iota
	worstFit
	bestFit
	spread
)

// PlacementConfig configures a [Placer].
type PlacementConfig struct {
	// Strategy is one of [Strategies]; default drf-alignment.
	Strategy string
	// MaxPreemptions bounds the instances a DRF round takes from functions
	// above their fair share to give to functions below it, when the
	// cluster is full. Default 64; negative disables preemption. The
	// spread baseline never preempts (neither does Kubernetes' default
	// scheduler among pods of equal priority).
	MaxPreemptions int
}

func (c *PlacementConfig) validate() (int, error) {
	if c.Strategy == "" {
		c.Strategy = StrategyAlignment
	}
	if c.MaxPreemptions == 0 {
		c.MaxPreemptions = 64
	}
	s := slices.Index(Strategies, c.Strategy)
	if s < 0 {
		return 0, &ConfigError{Problems: []string{fmt.Sprintf("placement.strategy: unknown %q, want one of %v", c.Strategy, Strategies)}}
	}
	return s, nil
}

// A Change is one decision of a round: Delta instances of Function to
// start (positive) or stop (negative) on Node.
type Change struct {
	Function, Node string
	Delta          int
}

// NodeCount is a number of instances on a node.
type NodeCount struct {
	Node string
	N    int
}

// Placer decides how many instances of each function run on each node: two-stage DRF
// placement (Mu). It is a deterministic state machine: nodes and
// functions (with the instance count the autoscaler wants) come in,
// [Placer.Place] returns the changes of one round; it does no I/O, reads
// no clock, and never iterates a map. See the package doc.
type Placer struct {
	strategy  int
	preempt   int
	nodes     []pnode
	funcs     []pfunc
	nodeIdx   map[string]int32
	funcIdx   map[string]int32
	total     Resources // capacity of the nodes that are up
	changes   []Change
	changeIdx map[[2]int32]int
	scratch   []float64 // per node: the linked functions' share there
	touched   []int32
	groupBuf  []int32
	roomBound Resources // see boundRoom
	shares    []float64 // preemptFor's cache of dominant shares
}

type pnode struct {
	name      string
	cap, used Resources
	up        bool
}

type pfunc struct {
	name    string
	demand  Resources
	desired int
	placed  int
	links   []int32     // out ∪ in
	out, in []int32     // links this function declared, and those declaring it
	on      []nodeCount // sorted by node
	gone    bool
}

type nodeCount struct{ node, n int32 }

// NewPlacer returns an empty placer.
func NewPlacer(cfg PlacementConfig) (*Placer, error) {
	s, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	p := &Placer{strategy: s, preempt: cfg.MaxPreemptions,
		nodeIdx: map[string]int32{}, funcIdx: map[string]int32{}, changeIdx: map[[2]int32]int{}}
	if s == spread {
		p.preempt = -1
	}
	return p, nil
}

// Strategy returns the placer's strategy name.
func (p *Placer) Strategy() string { return Strategies[p.strategy] }

// SetNode adds a node, or updates its capacity and marks it up. A node
// that was lost comes back empty. A capacity below what the node holds
// stops instances there at the next round.
func (p *Placer) SetNode(name string, capacity Resources) {
	i, ok := p.nodeIdx[name]
	if !ok {
		i = int32(len(p.nodes))
		p.nodeIdx[name] = i
		p.nodes = append(p.nodes, pnode{name: name})
		p.scratch = append(p.scratch, 0)
	}
	n := &p.nodes[i]
	if n.up {
		p.total = p.total.Add(n.cap, -1)
	}
	n.cap, n.up = capacity, true
	p.total = p.total.Add(n.cap, 1)
}

// RemoveNode marks a node lost: its instances are forgotten at once (they
// are gone with it) and re-placed elsewhere by the next round.
func (p *Placer) RemoveNode(name string) {
	i, ok := p.nodeIdx[name]
	if !ok || !p.nodes[i].up {
		return
	}
	n := &p.nodes[i]
	n.up = false
	p.total = p.total.Add(n.cap, -1)
	n.used = Resources{}
	for fi := range p.funcs {
		f := &p.funcs[fi]
		if k, ok := f.find(i); ok {
			f.placed -= int(f.on[k].n)
			f.on = slices.Delete(f.on, k, k+1)
		}
	}
}

// SetFunction adds a function or updates it: demand is what one instance
// holds, desired how many instances the autoscaler wants, links the
// functions it hands requests to or takes them from (a chain's
// neighbouring steps), which placement keeps on the same nodes where
// capacity allows so their hops stay in shared memory. Unknown links are
// added as functions that want no instances yet.
func (p *Placer) SetFunction(name string, demand Resources, desired int, links ...string) {
	i := p.function(name)
	f := &p.funcs[i]
	f.gone = false
	if f.demand != demand && f.placed > 0 {
		// Instances already running keep what they hold until they are
		// replaced; account for them at the new size from now on.
		for _, c := range f.on {
			n := &p.nodes[c.node]
			n.used = n.used.Add(f.demand, -int64(c.n)).Add(demand, int64(c.n))
		}
	}
	f.demand, f.desired = demand, max(desired, 0)
	// Links are symmetric: drop this function from the reverse links of
	// what it declared before, then declare the new ones.
	for _, o := range f.out {
		lf := &p.funcs[o]
		lf.in = slices.DeleteFunc(lf.in, func(x int32) bool { return x == i })
	}
	f.out = f.out[:0]
	for _, l := range links {
		if l == name {
			continue
		}
		li := p.function(l)
		f = &p.funcs[i] // p.funcs may have grown
		if !slices.Contains(f.out, li) {
			f.out = append(f.out, li)
			p.funcs[li].in = append(p.funcs[li].in, i)
		}
	}
	p.relink(i)
	for _, o := range p.funcs[i].out {
		p.relink(o)
	}
}

// relink rebuilds f's symmetric link list from what it declared and what
// declared it.
func (p *Placer) relink(fi int32) {
	f := &p.funcs[fi]
	f.links = append(f.links[:0], f.out...)
	for _, x := range f.in {
		if !slices.Contains(f.links, x) {
			f.links = append(f.links, x)
		}
	}
}

// SetDesired changes only a function's desired instance count.
func (p *Placer) SetDesired(name string, desired int) {
	if i, ok := p.funcIdx[name]; ok {
		p.funcs[i].desired = max(desired, 0)
	}
}

// RemoveFunction stops all of a function's instances at the next round.
func (p *Placer) RemoveFunction(name string) {
	if i, ok := p.funcIdx[name]; ok {
		p.funcs[i].desired, p.funcs[i].gone = 0, true
	}
}

func (p *Placer) function(name string) int32 {
	i, ok := p.funcIdx[name]
	if !ok {
		i = int32(len(p.funcs))
		p.funcIdx[name] = i
		p.funcs = append(p.funcs, pfunc{name: name})
	}
	return i
}

// Restore records n instances of a function already running on a node
// (what a restarted controller reads back from the assignments it wrote),
// as far as the node has room; it returns how many it recorded. The node
// and function must have been set.
func (p *Placer) Restore(function, node string, n int) int {
	fi, ok1 := p.funcIdx[function]
	ni, ok2 := p.nodeIdx[node]
	if !ok1 || !ok2 || !p.nodes[ni].up {
		return 0
	}
	f, nd := &p.funcs[fi], &p.nodes[ni]
	k := 0
	for k < n && f.demand.fits(nd.cap.Add(nd.used, -1)) {
		p.add(fi, ni, false)
		k++
	}
	return k
}

// Assignment returns where a function's instances are, by node index
// order (the order nodes were first set).
func (p *Placer) Assignment(function string) []NodeCount {
	i, ok := p.funcIdx[function]
	if !ok {
		return nil
	}
	out := make([]NodeCount, 0, len(p.funcs[i].on))
	for _, c := range p.funcs[i].on {
		out = append(out, NodeCount{p.nodes[c.node].name, int(c.n)})
	}
	return out
}

// Placed returns how many instances of a function are placed.
func (p *Placer) Placed(function string) int {
	if i, ok := p.funcIdx[function]; ok {
		return p.funcs[i].placed
	}
	return 0
}

// Used returns what a node's instances hold and its capacity.
func (p *Placer) Used(node string) (used, capacity Resources) {
	if i, ok := p.nodeIdx[node]; ok {
		return p.nodes[i].used, p.nodes[i].cap
	}
	return
}

// Place runs one round: it stops instances beyond what each function
// wants (and those a node no longer has room for), then places the
// missing ones — DRF strategies pick the function with the lowest dominant
// share, then the node by score; the spread baseline takes functions in
// the order they were added, each on the least allocated node — and, for
// DRF, moves up to MaxPreemptions instances from functions above their
// fair share to those below it that found no room. The returned changes
// are valid until the next call.
func (p *Placer) Place() []Change {
	p.changes = p.changes[:0]
	clear(p.changeIdx)
	p.shrink()
	switch p.strategy {
	case spread:
		p.fifo()
	default:
		if p.preemptFor(p.drf()) {
			p.drf() // a victim may fit where the receiver did not
		}
	}
	// Drop the no-op changes a preemption may have left.
	p.changes = slices.DeleteFunc(p.changes, func(c Change) bool { return c.Delta == 0 })
	return p.changes
}

// shrink stops surplus instances: over capacity on a node first, then
// beyond a function's desired count.
func (p *Placer) shrink() {
	for ni := range p.nodes {
		n := &p.nodes[ni]
		for n.up && !n.used.fits(n.cap) {
			// The function holding most of the overcommitted resource there.
			r := overRes(n)
			best, bestUse := int32(-1), int64(-1)
			for fi := range p.funcs {
				if k, ok := p.funcs[fi].find(int32(ni)); ok {
					if use := int64(p.funcs[fi].on[k].n) * p.funcs[fi].demand[r]; use > bestUse {
						best, bestUse = int32(fi), use
					}
				}
			}
			if best < 0 {
				break
			}
			p.remove(best, int32(ni))
		}
	}
	for fi := range p.funcs {
		f := &p.funcs[fi]
		for f.placed > f.desired {
			p.remove(int32(fi), p.shrinkNode(int32(fi)))
		}
	}
}

// overRes returns the resource a node is most overcommitted in.
func overRes(n *pnode) int {
	r, worst := 0, 0.0
	for i := range n.used {
		if x := float64(n.used[i]-n.cap[i]) / float64(max(n.cap[i], 1)); x > worst {
			r, worst = i, x
		}
	}
	return r
}

// shrinkNode picks the node to stop one of f's instances on: where its
// chain neighbours are least present relative to it, then the most
// allocated node (for spread: where f has most instances, as a
// ReplicaSet's scale-down does), then the last.
func (p *Placer) shrinkNode(fi int32) int32 {
	f := &p.funcs[fi]
	p.linkShares(fi)
	best, bestKey := int32(-1), [2]float64{}
	for _, c := range f.on {
		var key [2]float64
		if p.strategy == spread {
			key = [2]float64{float64(c.n), 0}
		} else {
			// Higher is a better victim: own share above the linked share,
			// then how full the node is.
			key = [2]float64{float64(c.n)/float64(f.placed) - p.scratch[c.node], p.fullness(c.node)}
		}
		if best < 0 || key[0] > bestKey[0]+1e-12 || (math.Abs(key[0]-bestKey[0]) <= 1e-12 && key[1] >= bestKey[1]) {
			best, bestKey = c.node, key
		}
	}
	p.clearScratch()
	return best
}

func (p *Placer) fullness(ni int32) float64 {
	n := &p.nodes[ni]
	x := 0.0
	for r := range n.used {
		if n.cap[r] > 0 {
			x = max(x, float64(n.used[r])/float64(n.cap[r]))
		}
	}
	return x
}

// share returns f's dominant share of the cluster with k more instances.
func (p *Placer) share(fi int32, k int) float64 {
	f := &p.funcs[fi]
	s := 0.0
	for r := range f.demand {
		if p.total[r] > 0 {
			s = max(s, float64(int64(f.placed+k)*f.demand[r])/float64(p.total[r]))
		}
	}
	return s
}

// boundRoom sets roomBound to the most of each resource free on any node
// that is up: an instance needing more of one cannot be placed, without a
// scan. Placing only lowers what is free, so the bound stays an upper
// bound until something is stopped; callers that stop instances set it
// again.
func (p *Placer) boundRoom() {
	p.roomBound = Resources{}
	for i := range p.nodes {
		if n := &p.nodes[i]; n.up {
			for r := range n.cap {
				p.roomBound[r] = max(p.roomBound[r], n.cap[r]-n.used[r])
			}
		}
	}
}

// drf places missing instances, lowest dominant share first, and returns
// the functions that found no room (in index order).
func (p *Placer) drf() []int32 {
	p.boundRoom()
	var h shareHeap
	for fi := range p.funcs {
		if p.funcs[fi].placed < p.funcs[fi].desired {
			h = append(h, shareItem{p.share(int32(fi), 0), int32(fi)})
		}
	}
	heap.Init(&h)
	var blocked []int32
	for len(h) > 0 {
		it := h[0]
		ni := p.pickNode(it.f)
		if ni < 0 {
			heap.Pop(&h)
			blocked = append(blocked, it.f)
			continue
		}
		p.add(it.f, ni, true)
		if p.funcs[it.f].placed < p.funcs[it.f].desired {
			h[0].share = p.share(it.f, 0)
			heap.Fix(&h, 0)
		} else {
			heap.Pop(&h)
		}
	}
	slices.Sort(blocked)
	return blocked
}

// fifo is the spreading baseline: functions in the order they were added,
// every missing instance on the least allocated node that fits.
func (p *Placer) fifo() {
	p.boundRoom()
	for fi := range p.funcs {
		f := &p.funcs[fi]
		for f.placed < f.desired {
			ni := p.pickNode(int32(fi))
			if ni < 0 {
				break
			}
			p.add(int32(fi), ni, true)
		}
	}
}

// preemptFor gives blocked functions instances taken from the functions
// with the highest dominant shares, one at a time, while the swap keeps
// the victim's share at least the receiver's (so shares only ever move
// towards equal, and swaps cannot cycle). It reports whether it moved any.
func (p *Placer) preemptFor(blocked []int32) bool {
	if p.preempt < 0 || len(blocked) == 0 {
		return false
	}
	budget := p.preempt
	// Dominant shares, cached: only the two functions of a swap change.
	p.shares = slices.Grow(p.shares[:0], len(p.funcs))[:len(p.funcs)]
	for fi := range p.funcs {
		p.shares[fi] = p.share(int32(fi), 0)
	}
	// Victims: functions with instances, highest share first.
	victims := make([]int32, 0, len(p.funcs))
	for fi := range p.funcs {
		if p.funcs[fi].placed > 0 {
			victims = append(victims, int32(fi))
		}
	}
	byShare := func(a, b int32) int {
		sa, sb := p.shares[a], p.shares[b]
		if sa != sb {
			if sa > sb {
				return -1
			}
			return 1
		}
		return int(a - b)
	}
	slices.SortFunc(victims, byShare)
	// fix moves victims[i] to its place after its share changed.
	fix := func(f int32) {
		i := slices.Index(victims, f)
		if i < 0 {
			return
		}
		victims = slices.Delete(victims, i, i+1)
		j, _ := slices.BinarySearchFunc(victims, f, byShare)
		victims = slices.Insert(victims, j, f)
	}
	slices.SortFunc(blocked, func(a, b int32) int { return -byShare(a, b) })
	for budget > 0 && len(blocked) > 0 {
		// The blocked function with the lowest share gets the next one.
		f := blocked[0]
		if p.funcs[f].placed >= p.funcs[f].desired {
			blocked = blocked[1:]
			continue
		}
		done := false
		for _, g := range victims {
			if g == f || p.funcs[g].placed == 0 {
				continue
			}
			if p.share(g, -1) < p.share(f, 1)-1e-12 {
				break // every later victim is poorer still
			}
			if ni := p.swapNode(g, f); ni >= 0 {
				p.remove(g, ni)
				p.add(f, ni, true)
				p.shares[g], p.shares[f] = p.share(g, 0), p.share(f, 0)
				fix(g)
				if slices.Contains(victims, f) {
					fix(f)
				} else {
					j, _ := slices.BinarySearchFunc(victims, f, byShare)
					victims = slices.Insert(victims, j, f)
				}
				budget--
				done = true
				break
			}
		}
		if !done {
			blocked = blocked[1:]
			continue
		}
		// f's share grew: keep blocked ordered (it moves back at most).
		j := 1
		for j < len(blocked) && byShare(blocked[j], f) > 0 {
			j++
		}
		copy(blocked, blocked[1:j])
		blocked[j-1] = f
	}
	return budget < p.preempt
}

// swapNode returns a node where stopping one instance of g frees room for
// one of f (the best by f's node score), or -1.
func (p *Placer) swapNode(g, f int32) int32 {
	fd, gd := p.funcs[f].demand, p.funcs[g].demand
	best := int32(-1)
	var bestKey [2]float64
	p.linkShares(f)
	for _, c := range p.funcs[g].on {
		n := &p.nodes[c.node]
		if !fd.fits(n.cap.Add(n.used, -1).Add(gd, 1)) {
			continue
		}
		key := p.nodeKey(f, c.node)
		if best < 0 || better(key, bestKey) {
			best, bestKey = c.node, key
		}
	}
	p.clearScratch()
	return best
}

// pickNode returns the node for one more instance of f, or -1 if none
// has room: for DRF the node where f's chain neighbours are most present
// relative to f (so hops stay on the node), then the strategy's score;
// for spread the least allocated node.
func (p *Placer) pickNode(fi int32) int32 {
	d := p.funcs[fi].demand
	if !d.fits(p.roomBound) {
		return -1 // no node has that much of some resource free
	}
	if p.strategy != spread {
		p.linkShares(fi)
	}
	best := int32(-1)
	var bestKey [2]float64
	for ni := range p.nodes {
		n := &p.nodes[ni]
		if !n.up || !d.fits(n.cap.Add(n.used, -1)) {
			continue
		}
		key := p.nodeKey(fi, int32(ni))
		if best < 0 || better(key, bestKey) {
			best, bestKey = int32(ni), key
		}
	}
	p.clearScratch()
	return best
}

func better(a, b [2]float64) bool {
	if math.Abs(a[0]-b[0]) > 1e-9 {
		return a[0] > b[0]
	}
	return a[1] > b[1]+1e-12
}

// nodeKey scores node ni for one more instance of fi; higher is better.
// p.scratch must hold fi's linked shares (linkShares).
func (p *Placer) nodeKey(fi, ni int32) [2]float64 {
	f, n := &p.funcs[fi], &p.nodes[ni]
	d := f.demand
	var s float64
	switch p.strategy {
	case alignment: // Tetris: demand · free, both relative to the node
		for r := range d {
			if n.cap[r] > 0 {
				s += float64(d[r]) / float64(n.cap[r]) * float64(n.cap[r]-n.used[r]) / float64(n.cap[r])
			}
		}
	case worstFit, bestFit: // the residual after placing, relative to the cluster
		for r := range d {
			if p.total[r] > 0 {
				s += float64(n.cap[r]-n.used[r]-d[r]) / float64(p.total[r])
			}
		}
		if p.strategy == bestFit {
			s = -s
		}
	case spread: // Kubernetes' LeastAllocated: mean free fraction after placing
		for r := range d {
			if n.cap[r] > 0 {
				s += float64(n.cap[r]-n.used[r]-d[r]) / float64(n.cap[r]) / NumResources
			}
		}
		return [2]float64{0, s}
	}
	// Co-location: how much more of the neighbours than of f is here.
	// Both as fractions of the instances placed so far, so that a chain
	// grows in step on each node and, where all are even, the strategy
	// spreads it.
	own := 0.0
	if k, ok := f.find(ni); ok {
		own = float64(f.on[k].n) / float64(f.placed)
	}
	return [2]float64{p.scratch[ni] - own, s}
}

// linkShares fills p.scratch with, per node, the mean over the other
// functions of fi's chain group (those linked to it, directly or through
// others) of the fraction of their instances there: where the group is.
func (p *Placer) linkShares(fi int32) {
	group := p.group(fi)
	k := 0
	for _, li := range group {
		if p.funcs[li].placed > 0 {
			k++
		}
	}
	for _, li := range group {
		l := &p.funcs[li]
		if l.placed == 0 {
			continue
		}
		for _, c := range l.on {
			if p.scratch[c.node] == 0 {
				p.touched = append(p.touched, c.node)
			}
			p.scratch[c.node] += float64(c.n) / float64(l.placed) / float64(k)
		}
	}
}

// group returns the functions reachable from fi by links, fi excluded, in
// breadth-first order (valid until the next call).
func (p *Placer) group(fi int32) []int32 {
	g := append(p.groupBuf[:0], fi)
	for i := 0; i < len(g); i++ {
		for _, l := range p.funcs[g[i]].links {
			if !slices.Contains(g, l) {
				g = append(g, l)
			}
		}
	}
	p.groupBuf = g
	return g[1:]
}

func (p *Placer) clearScratch() {
	for _, ni := range p.touched {
		p.scratch[ni] = 0
	}
	p.touched = p.touched[:0]
}

func (f *pfunc) find(ni int32) (int, bool) {
	return slices.BinarySearchFunc(f.on, ni, func(c nodeCount, ni int32) int { return int(c.node - ni) })
}

func (p *Placer) add(fi, ni int32, record bool) {
	f, n := &p.funcs[fi], &p.nodes[ni]
	k, ok := f.find(ni)
	if !ok {
		f.on = slices.Insert(f.on, k, nodeCount{node: ni})
	}
	f.on[k].n++
	f.placed++
	n.used = n.used.Add(f.demand, 1)
	if record {
		p.record(fi, ni, 1)
	}
}

func (p *Placer) remove(fi, ni int32) {
	f, n := &p.funcs[fi], &p.nodes[ni]
	k, ok := f.find(ni)
	if !ok {
		return
	}
	if f.on[k].n--; f.on[k].n == 0 {
		f.on = slices.Delete(f.on, k, k+1)
	}
	f.placed--
	n.used = n.used.Add(f.demand, -1)
	p.record(fi, ni, -1)
}

func (p *Placer) record(fi, ni int32, d int) {
	key := [2]int32{fi, ni}
	if i, ok := p.changeIdx[key]; ok {
		p.changes[i].Delta += d
		return
	}
	p.changeIdx[key] = len(p.changes)
	p.changes = append(p.changes, Change{p.funcs[fi].name, p.nodes[ni].name, d})
}

type shareItem struct {
	share float64
	f     int32
}

type shareHeap []shareItem

func (h shareHeap) Len() int { return len(h) }
func (h shareHeap) Less(i, j int) bool {
	if h[i].share != h[j].share {
		return h[i].share < h[j].share
	}
	return h[i].f < h[j].f
}
func (h shareHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *shareHeap) Push(x any)   { *h = append(*h, x.(shareItem)) }
func (h *shareHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// Locality returns the fraction of hops from function a to function b
// that can stay on one node (in shared memory) when each step spreads its
// traffic over its instances: Σ over nodes of min(a's fraction there, b's
// fraction there). 0 if either has no instance.
func (p *Placer) Locality(a, b string) float64 {
	ai, ok1 := p.funcIdx[a]
	bi, ok2 := p.funcIdx[b]
	if !ok1 || !ok2 {
		return 0
	}
	fa, fb := &p.funcs[ai], &p.funcs[bi]
	if fa.placed == 0 || fb.placed == 0 {
		return 0
	}
	l, i, j := 0.0, 0, 0
	for i < len(fa.on) && j < len(fb.on) {
		switch x, y := fa.on[i], fb.on[j]; {
		case x.node < y.node:
			i++
		case x.node > y.node:
			j++
		default:
			l += min(float64(x.n)/float64(fa.placed), float64(y.n)/float64(fb.placed))
			i++
			j++
		}
	}
	return l
}
