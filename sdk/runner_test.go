package sdk

import (
	"bytes"
	"strconv"
	"sync"
	"testing"
)

func TestRunnerRunsLikeAChainStep(t *testing.T) {
	r, err := NewRunner(RunnerOptions{BufferSize: 4 << 10, Calls: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h := func(req *Request, res *Response) error {
		res.SetContentType("text/plain")
		res.WriteString(req.Method() + " " + req.Path() + "?" + req.Query() + " " + req.Header("X-Who") +
			" hop " + strconv.Itoa(req.Hop()) + "/" + strconv.Itoa(req.Steps()) + ": ")
		_, err := res.Write(bytes.ToUpper(req.Payload()))
		return err
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				c := r.Begin()
				c.SetRequest("POST", "/p", "q=1")
				c.AddHeader("X-Who", "me")
				n := copy(c.Input(), "body"+strconv.Itoa(g))
				out := c.Run(h, n, 1, 3)
				want := "POST /p?q=1 me hop 1/3: BODY" + strconv.Itoa(g)
				if out.Status != 200 || out.Stop || string(out.Body) != want || string(out.ContentType) != "text/plain" {
					t.Errorf("call %d: %+v %q, want %q", i, out, out.Body, want)
				}
				c.End()
			}
		}()
	}
	wg.Wait()
	if free := r.p.FreeBuffers(); free != int(r.p.Buffers()) {
		t.Fatalf("%d of %d buffers free after the calls", free, r.p.Buffers())
	}
}

func TestRunnerErrorsAndStatus(t *testing.T) {
	r, err := NewRunner(RunnerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c := r.Begin()
	out := c.Run(func(*Request, *Response) error { return Errorf(404, "no such thing") }, 0, 0, 2)
	if out.Status != 404 || !out.Stop || string(out.Body) != "no such thing" {
		t.Fatalf("got %+v %q", out, out.Body)
	}
	c.End()
}

// Running an in-place handler on a Runner allocates nothing.
func TestRunnerAllocatesNothing(t *testing.T) {
	r, err := NewRunner(RunnerOptions{Calls: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h := func(req *Request, res *Response) error {
		p := req.Payload()
		for i := range p {
			p[i] ^= 0x20
		}
		return nil
	}
	allocs := testing.AllocsPerRun(1000, func() {
		c := r.Begin()
		c.SetRequest("POST", "/x", "")
		n := copy(c.Input(), "hello")
		c.Run(h, n, 0, 1)
		c.End()
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per call, want 0", allocs)
	}
}

func BenchmarkRunner(b *testing.B) {
	r, err := NewRunner(RunnerOptions{Calls: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	h := func(req *Request, res *Response) error { return nil }
	body := make([]byte, 1024)
	b.ReportAllocs()
	for b.Loop() {
		c := r.Begin()
		n := copy(c.Input(), body)
		c.Run(h, n, 0, 1)
		c.End()
	}
}
