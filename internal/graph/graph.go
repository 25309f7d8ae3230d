// Package graph is a chain's graph at run time: where a step's output goes
// next — the next step of a line, the step a handler chose, every branch of
// a fan-out (sharing the output), the gateway when it is an input of a
// join, the caller when the step answered a call, the client when the
// chain is done — and the join's list of inputs. The SDK (a step routing
// its own output: direct function routing), the gateway (routing for
// SDKs that leave it to it, and for the daemon's salvage) and the daemon
// use it alike, so that a buffer goes the same way whoever moves it.
//
// The graph itself is in the app's routing table (pool.NodeAt), written by
// the daemon from spry.yaml (config checks that it can run: no cycle, fan-
// outs that meet at their join). A buffer's header says where it is: its
// node and phase, the successors its handler chose, the join frames of the
// fan-outs it is a branch of, and, for a call, its caller.
//
// Driving it, after a handler ran on buffer out at its node:
//
//	r, err := graph.Next(p, out)          // err: a choice the graph does not allow (502)
//	switch r.Kind {
//	case graph.Forward:                   // one successor: DFR to its least-loaded instance
//		err = graph.Send(p, c, out, r.Node, rot)
//	case graph.FanOut:                    // every successor in r.Mask, one token each
//		toks, err := graph.Split(p, self, out, r, now)
//		for _, t := range toks { graph.Send(p, c, t.Buf, t.Node, rot) … }
//	case graph.Join, graph.Reply:         // to the gateway (a join's input, or the answer)
//		err = graph.ToGateway(p, c, out, r)
//	case graph.Return:                    // a call's answer, to the caller
//		err = graph.ToGateway(p, c, out, r) // (r.Dst is the caller)
//	}
package graph

import (
	"errors"
	"math/bits"

	"github.com/spry-dev/spry/internal/crash"
	"github.com/spry-dev/spry/internal/desc"
	"github.com/spry-dev/spry/internal/mono"
	"github.com/spry-dev/spry/internal/pool"
	"github.com/spry-dev/spry/internal/transport"
)

// Kind is what follows a step's output.
type Kind uint8

// Kinds of Route.
const (
	Reply   Kind = iota // the chain is done (or stopped): the answer, to the gateway
	Forward             // to the next step, Node
	FanOut              // to every successor in Mask at once; the branches meet at join Join
	Join                // an input of join Node: to the gateway, which collects them
	Return              // a call's answer: to the caller, Dst
)

func (k Kind) String() string {
	return [...]string{"reply", "forward", "fan-out", "join", "return"}[min(int(k), 4)]
}

// Route is where a buffer goes.
type Route struct {
	Kind Kind
	Node uint8  // Forward: the next node; Join: the join node; FanOut: the fan-out's node
	Join uint8  // FanOut: the join its branches meet at
	Mask uint16 // FanOut: the successors that get a branch (bit k: the node's k-th)
	Dst  uint16 // Return: the caller's endpoint
}

// Errors Next returns: a handler's choice the graph does not allow. The
// step's request ends with 502.
var (
	ErrChoice   = errors.New("graph: the step chose a next step the graph does not allow")
	ErrOneOnly  = errors.New("graph: the step chose several next steps where the graph allows one")
	ErrBadGraph = errors.New("graph: the buffer's place in its graph is not valid")
	ErrDepth    = errors.New("graph: fan-outs nest too deeply")
)

// Next decides where buffer out, the output of the step at its node (its
// header's node, phase done), goes.
func Next(p *pool.Pool, out uint32) (Route, error) {
	h := p.Header(out)
	if h.Node() == pool.CallNode {
		if c := h.Call(); c.Caller != 0 {
			return Route{Kind: Return, Dst: c.Caller}, nil
		}
		return Route{}, ErrBadGraph
	}
	top, inBranch := h.TopFrame()
	if h.Flags()&pool.FlagStop != 0 {
		// A stop ends the branch it is in (its join gets it, with its
		// status), or the chain.
		if inBranch {
			return Route{Kind: Join, Node: top.Join}, nil
		}
		return Route{Kind: Reply}, nil
	}
	v, ok := p.NodeAt(h.Chain(), int(h.Node()))
	if !ok {
		return Route{}, ErrBadGraph
	}
	n := v.NumNext()
	chosen := h.Chosen()
	if n == 0 {
		if chosen != 0 {
			return Route{}, ErrChoice
		}
		if inBranch {
			return Route{Kind: Join, Node: top.Join}, nil // config forbids it; the join sorts it out
		}
		return Route{Kind: Reply}, nil
	}
	if chosen>>uint(n) != 0 {
		return Route{}, ErrChoice
	}
	if v.FanOut() {
		mask := chosen
		if mask == 0 {
			mask = 1<<uint(n) - 1
		}
		j := v.JoinAt()
		if j == pool.NoNode {
			return Route{}, ErrBadGraph
		}
		return Route{Kind: FanOut, Node: h.Node(), Join: j, Mask: mask}, nil
	}
	k := 0
	if chosen != 0 {
		if bits.OnesCount16(chosen) != 1 {
			return Route{}, ErrOneOnly
		}
		k = bits.TrailingZeros16(chosen)
	}
	next := v.Next(k)
	if next == pool.NoNode {
		return Route{}, ErrBadGraph
	}
	if inBranch && next == top.Join {
		return Route{Kind: Join, Node: next}, nil
	}
	return Route{Kind: Forward, Node: next}, nil
}

// Send hands buffer b, held by c, to the least-loaded ready instance of
// node's function (direct function routing), marking it queued there.
// Errors are transport.Forward's. Retry with Resend: once Send failed, the
// buffer may not be the caller's any more (the daemon's sweep may take a
// buffer a request that is over left behind), and only the transfer's
// compare-and-swap may touch it.
func Send(p *pool.Pool, c transport.Conn, b uint32, node uint8, rot uint32) error {
	h := p.Header(b)
	h.SetPlace(node, pool.PhaseQueued)
	h.SetSent(mono.Now())
	return Resend(p, c, b, node, rot)
}

// Resend is Send again, after a Send that failed: it writes nothing.
func Resend(p *pool.Pool, c transport.Conn, b uint32, node uint8, rot uint32) error {
	chain := p.Header(b).Chain()
	fn, ok := p.Step(chain, int(node))
	if !ok {
		return ErrBadGraph
	}
	return transport.Forward(p, c, fn, desc.Desc{Buf: b, Chain: chain, Hop: node}, rot)
}

// ToGateway hands buffer b, held by c, to where r (a Reply, Join or
// Return) sends it: the app's gateway, or a caller. Errors are
// transport.Pass's; retry with ToGatewayAgain (see Resend).
func ToGateway(p *pool.Pool, c transport.Conn, b uint32, r Route) error {
	d, err := GatewayDesc(p, b, r)
	if err != nil {
		return err
	}
	return transport.Pass(p, c, d)
}

// GatewayDesc is ToGateway's descriptor for b, for a sender that passes it
// on itself (a transport.Outbox): ToGateway is GatewayDesc and
// transport.Pass.
func GatewayDesc(p *pool.Pool, b uint32, r Route) (desc.Desc, error) {
	if r.Kind == Join {
		p.Header(b).SetPlace(r.Node, pool.PhaseQueued)
	}
	return gatewayDesc(p, b, r)
}

// ToGatewayAgain is ToGateway again, after one that failed: it writes
// nothing.
func ToGatewayAgain(p *pool.Pool, c transport.Conn, b uint32, r Route) error {
	d, err := gatewayDesc(p, b, r)
	if err != nil {
		return err
	}
	return transport.Pass(p, c, d)
}

func gatewayDesc(p *pool.Pool, b uint32, r Route) (desc.Desc, error) {
	h := p.Header(b)
	d := desc.Desc{Dst: p.Gateway(), Buf: b, Chain: h.Chain(), Hop: h.Node()}
	switch r.Kind {
	case Reply:
		d.Flags = desc.FlagReply
	case Join:
		d.Hop, d.Flags = r.Node, desc.FlagJoin
	case Return:
		d.Dst, d.Flags = r.Dst, desc.FlagReturn
	default:
		return d, ErrBadGraph
	}
	return d, nil
}

// Branch is one branch of a fan-out: a token and the node it goes to.
type Branch struct {
	Buf  uint32
	Node uint8
	Join bool // the branch is empty: the token goes straight to the join
}

// Split makes the branches of fan-out r for buffer out, which self holds:
// one token per successor in r.Mask, each reading out's payload (shared,
// not copied) and carrying the join frame that brings it to r.Join, queued
// at its first node. out becomes shared (pool.Publish): self holds the
// tokens now, and sends them with Send (a branch that is the join itself
// with ToGateway, as a Join). now is the fan-out's time (mono ns), from
// which a join's wait counts. On error nothing is made and self still
// holds out (pool.ErrNoRoom: the pool is out of buffers).
func Split(p *pool.Pool, self uint16, out uint32, r Route, now int64, dst *[pool.MaxNext]Branch) ([]Branch, error) {
	h := p.Header(out)
	v, ok := p.NodeAt(h.Chain(), int(r.Node))
	if !ok || r.Kind != FanOut {
		return nil, ErrBadGraph
	}
	if h.Depth() >= pool.MaxDepth {
		return nil, ErrDepth
	}
	width := v.NumNext()
	of := bits.OnesCount16(r.Mask)
	bs := dst[:0]
	for k := range width {
		if r.Mask&(1<<k) == 0 {
			continue
		}
		node := v.Next(k)
		tok, ok := p.Token(out, self, k)
		if !ok || node == pool.NoNode {
			for _, b := range bs {
				p.Free(b.Buf, self)
			}
			if !ok {
				return nil, pool.ErrNoRoom
			}
			return nil, ErrBadGraph
		}
		t := p.Header(tok)
		t.PushFrame(pool.Frame{At: now, Join: r.Join, Slot: uint16(k), Of: uint16(of), Width: uint16(width)})
		t.SetPlace(node, pool.PhaseQueued)
		t.SetChosen(0)
		bs = append(bs, Branch{Buf: tok, Node: node, Join: node == r.Join})
	}
	crash.Point("fanout.tokens")
	if !p.Publish(out, self, uint32(r.Mask)) {
		// The daemon took out back: the tokens are not real.
		for _, b := range bs {
			p.Free(b.Buf, self)
		}
		return nil, transport.ErrLost
	}
	crash.Point("fanout.published")
	return bs, nil
}
