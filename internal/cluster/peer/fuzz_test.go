package peer

import (
	"bytes"
	"net"
	"testing"
	"time"
)

// Every head the parser takes describes parts that fit its bounds.
func FuzzHead(f *testing.F) {
	var b [headSize]byte
	(&head{typ: frameRequest, hop: 1, metaLen: 10, bodyLen: 5, appLen: 4, chainLen: 3, fnLen: 3, times: 1}).put(b[:])
	f.Add(b[:])
	(&head{typ: frameReply, status: 200, bodyLen: 5, ctypeLen: 10}).put(b[:])
	f.Add(b[:])
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < headSize {
			return
		}
		var h head
		if h.get(in[:headSize]) != nil {
			return
		}
		if h.extra() > maxExtra {
			t.Fatalf("extra %d > %d", h.extra(), maxExtra)
		}
		var out [headSize]byte
		h.put(out[:])
		var g head
		if g.get(out[:]) != nil || g != h {
			t.Fatalf("round trip: %+v != %+v", g, h)
		}
	})
}

// A link fed anything by the other side never crashes the node nor leaves
// a buffer or request behind: a request it can make sense of is answered,
// anything else closes the link.
func FuzzLinkFrames(f *testing.F) {
	req := func(app, chain, fn string, hop uint8, meta, body []byte) []byte {
		var b [headSize]byte
		(&head{typ: frameRequest, hop: hop, metaLen: uint16(len(meta)), bodyLen: uint32(len(body)), tag: 7,
			left: int64(time.Second), appLen: uint8(len(app)), chainLen: uint8(len(chain)), fnLen: uint8(len(fn))}).put(b[:])
		out := append(b[:], app...)
		out = append(append(append(out, chain...), fn...), meta...)
		return append(out, body...)
	}
	meta := []byte{4, 'P', 'O', 'S', 'T', 4, 0, '/', 'b', 'u', 'y', 0, 0, 0}
	f.Add(req("shop", "buy", "rev", 1, meta, []byte("hello")))
	f.Add(req("shop", "buy", "upper", 1, meta, []byte("wrong step")))
	f.Add(req("shop", "nope", "rev", 1, nil, nil))
	f.Add(req("shop", "buy", "rev", 9, nil, []byte("bad hop")))
	var ping [headSize]byte
	(&head{typ: framePing, tag: 3}).put(ping[:])
	f.Add(ping[:])
	f.Add(bytes.Repeat([]byte{0xff}, 100))
	n := newTNode(f, "fz", nodeOpts{runs: [2]bool{false, true}, timeout: 300 * time.Millisecond})
	n.hub.SetPeers([]Peer{{Name: "other", Address: "127.0.0.1:1"}})
	f.Fuzz(func(t *testing.T, in []byte) {
		c1, c2 := net.Pipe()
		l := newLink(n.hub, "other", c1, false)
		done := make(chan struct{})
		go func() { l.run(); close(done) }()
		go func() {
			// Drain what the node answers.
			b := make([]byte, 4096)
			for {
				if _, err := c2.Read(b); err != nil {
					return
				}
			}
		}()
		c2.SetWriteDeadline(time.Now().Add(time.Second))
		c2.Write(in)
		c2.Close()
		<-done
		n.waitIdleT(t)
	})
}
