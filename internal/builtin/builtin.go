// Package builtin holds the functions compiled into the spry binary, for
// `builtin:` in spry.yaml: the demo app's steps, and small tools for tests
// and benchmarks. The daemon runs a builtin instance by starting its own
// executable as `spry fn NAME`, which calls sdk.Serve with the handler.
//
// Other packages (the benchmark workloads) add theirs with Register from an
// init function.
package builtin

import (
	"context"
	_ "embed"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/spry-dev/spry/internal/pool"
	"github.com/spry-dev/spry/sdk"
)

// Function is a registered builtin.
type Function struct {
	Name    string
	Doc     string
	Handler sdk.Handler
	// Keeps is true for a builtin that keeps state between requests (the
	// FL top's jobs): the node honours its instances' pool.SlotStats.Keeps
	// (not idle, buffers its own). Any instance can write its own stats
	// slot, so the node honours Keeps for these builtins only: a user's
	// function, or a builtin that keeps nothing, cannot shield buffers
	// from reclaim or stay up by writing it.
	Keeps bool
}

var (
	mu       sync.Mutex
	registry = map[string]Function{}
)

// Identity names what a runner of builtins can run and the pool layout it
// speaks: a node runs builtins with a runner (cmd/spry-fn) only when its
// Identity is the node's own.
func Identity() string {
	return "spry-fn layout=" + strconv.FormatUint(uint64(pool.Version), 10) + " builtins=" + strings.Join(Names(), ",")
}

// Register adds a builtin. It panics on a duplicate name (a programming
// error, found at init).
func Register(name, doc string, h sdk.Handler) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := registry[name]; dup {
		panic("builtin: duplicate " + name)
	}
	registry[name] = Function{Name: name, Doc: doc, Handler: h}
}

// RegisterKeeper adds a builtin that keeps state between requests (see
// Function.Keeps).
func RegisterKeeper(name, doc string, h sdk.Handler) {
	Register(name, doc, h)
	mu.Lock()
	defer mu.Unlock()
	f := registry[name]
	f.Keeps = true
	registry[name] = f
}

// Keeps reports whether the builtin called name keeps state between
// requests (Function.Keeps).
func Keeps(name string) bool {
	f, ok := Lookup(name)
	return ok && f.Keeps
}

// Lookup returns the builtin called name.
func Lookup(name string) (Function, bool) {
	mu.Lock()
	defer mu.Unlock()
	f, ok := registry[name]
	return f, ok
}

// Names returns the names of all builtins, sorted.
func Names() []string {
	mu.Lock()
	defer mu.Unlock()
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func init() {
	Register("echo", "passes its input on unchanged", Echo)
	Register("upper", "upper-cases ASCII letters, in place", Upper)
	Register("reverse", "reverses the text (by UTF-8 character), in place", Reverse)
	Register("wrap", "wraps the text in a JSON object with the hop count and per-hop timings", Wrap)
	Register("sleep", "sleeps for ?ms=N milliseconds (default 100), then passes its input on", Sleep)
	Register("fail", "fails with ?status=N (default 500) and the input as the message", Fail)
	Register("call", "calls the function ?fn=NAME of its app with its input (req.Call) and passes the answer on", Call)
	Register("concat", "a join: its inputs' payloads one after the other (fails as the first input that failed or did not arrive); elsewhere passes its input on", Concat)
}

// Echo passes its input on unchanged.
func Echo(req *sdk.Request, res *sdk.Response) error { return nil }

// Upper upper-cases ASCII letters in place (into a fresh buffer when the
// input is a fan-out's, shared with the other branches).
func Upper(req *sdk.Request, res *sdk.Response) error {
	p, out, err := inPlace(req, res)
	if err != nil {
		return err
	}
	for i, c := range p {
		if 'a' <= c && c <= 'z' {
			c = c - 'a' + 'A'
		}
		out[i] = c
	}
	return nil
}

// inPlace returns the input and where a same-length output goes: the input
// itself when it is this step's to change, else (a fan-out's branch, whose
// input the other branches read: Response.Buffer knows) a fresh output of
// the same length, contiguous however large.
func inPlace(req *sdk.Request, res *sdk.Response) (in, out []byte, err error) {
	in = req.Payload()
	if len(in) == 0 {
		return in, in, nil
	}
	buf := res.Buffer()
	if len(buf) > 0 && &buf[0] == &in[0] {
		return in, in, nil
	}
	if len(buf) >= len(in) {
		res.SetLen(len(in))
		return in, buf[:len(in)], nil
	}
	out, err = res.Alloc(len(in))
	return in, out, err
}

// Reverse reverses the text in place, character by character: each UTF-8
// sequence is reversed, then the whole, so characters stay intact. Invalid
// bytes are treated as one-byte characters.
func Reverse(req *sdk.Request, res *sdk.Response) error {
	in, p, err := inPlace(req, res)
	if err != nil {
		return err
	}
	if len(p) > 0 && &p[0] != &in[0] {
		copy(p, in)
	}
	for i := 0; i < len(p); {
		_, n := utf8.DecodeRune(p[i:])
		reverseBytes(p[i : i+n])
		i += n
	}
	reverseBytes(p)
	return nil
}

func reverseBytes(b []byte) {
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
}

// Wrap writes a fresh JSON object holding the input as a string, the number
// of hops so far (this one included) and each earlier hop's duration in
// microseconds, read from the buffer header the steps stamped.
//
//	{"message":"…","hops":3,"hop_us":[12.5,8.1]}
func Wrap(req *sdk.Request, res *sdk.Response) error {
	var scratch [32]byte
	res.SetContentType("application/json")
	res.WriteString(`{"message":`)
	writeJSONString(res, req.Payload())
	res.WriteString(`,"hops":`)
	res.Write(strconv.AppendInt(scratch[:0], int64(req.Hop()+1), 10))
	res.WriteString(`,"hop_us":[`)
	for h := 0; h < req.Hop(); h++ {
		if h > 0 {
			res.WriteString(",")
		}
		start, end := req.HopTiming(h)
		us := float64(end-start) / float64(time.Microsecond)
		res.Write(strconv.AppendFloat(scratch[:0], us, 'f', 1, 64))
	}
	_, err := res.WriteString("]}\n")
	return err
}

// writeJSONString writes s as a JSON string literal.
func writeJSONString(res *sdk.Response, s []byte) {
	const hex = "0123456789abcdef"
	res.WriteString(`"`)
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRune(s[i:])
			if r != utf8.RuneError || n != 1 {
				i += n
				continue
			}
		}
		res.Write(s[start:i])
		switch c {
		case '"', '\\':
			res.Write([]byte{'\\', c})
		case '\n':
			res.WriteString(`\n`)
		case '\r':
			res.WriteString(`\r`)
		case '\t':
			res.WriteString(`\t`)
		default: // control characters and invalid UTF-8
			if c >= utf8.RuneSelf {
				res.WriteString(`\ufffd`)
			} else {
				res.Write([]byte{'\\', 'u', '0', '0', hex[c>>4], hex[c&0xf]})
			}
		}
		i++
		start = i
	}
	res.Write(s[start:])
	res.WriteString(`"`)
}

// Sleep sleeps for ?ms=N milliseconds (default 100, at most 10 minutes) and
// passes its input on: a stand-in for slow work in tests and demos.
func Sleep(req *sdk.Request, res *sdk.Response) error {
	ms := 100
	if v := queryValue(req.Query(), "ms"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 600_000 {
			return sdk.Errorf(400, "sleep: ms=%q is not a number of milliseconds in 0..600000", v)
		}
		ms = n
	}
	time.Sleep(time.Duration(ms) * time.Millisecond)
	return nil
}

// Fail ends the chain with ?status=N (400..599, default 500) and the input
// as the message: for testing how errors travel.
func Fail(req *sdk.Request, res *sdk.Response) error {
	status := 500
	if v := queryValue(req.Query(), "status"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 400 || n > 599 {
			return sdk.Errorf(400, "fail: status=%q is not in 400..599", v)
		}
		status = n
	}
	return &sdk.Error{Status: status, Msg: fmt.Sprintf("fail: %s", req.Payload())}
}

// queryValue returns the first value of key in a raw query string.
func queryValue(q, key string) string {
	for q != "" {
		var kv string
		kv, q, _ = strings.Cut(q, "&")
		k, v, _ := strings.Cut(kv, "=")
		if k == key {
			return v
		}
	}
	return ""
}

// DemoYAML is the config of the built-in demo app.
//
//go:embed demo.yaml
var DemoYAML []byte

// Concat joins the branches of a fan-out: its output is their payloads in
// the order spry.yaml lists them. A branch that failed fails the join with
// its status and message, one that did not arrive with 502.
func Concat(req *sdk.Request, res *sdk.Response) error {
	if !req.IsJoin() {
		return nil
	}
	n := 0
	for i := range req.NumInputs() {
		in := req.Input(i)
		if err := in.Err(); err != nil {
			if !in.Arrived() {
				return sdk.Errorf(502, "concat: the output of branch %s did not arrive", in.Step())
			}
			return err
		}
		n += len(in.Payload())
	}
	out, err := res.Alloc(n)
	if err != nil {
		return err
	}
	n = 0
	for i := range req.NumInputs() {
		n += copy(out[n:], req.Input(i).Payload())
	}
	res.SetContentType(req.Input(0).ContentType())
	return nil
}

// Call calls the function ?fn=NAME of its app with its input (req.Call)
// and passes the answer on, with its content type: calls, tried from
// spry.yaml (on one node, or across nodes when the callee runs elsewhere).
// A failed call fails the step with the callee's status and message.
func Call(req *sdk.Request, res *sdk.Response) error {
	fn := queryValue(req.Query(), "fn")
	if fn == "" {
		return sdk.Errorf(400, "call: ?fn=NAME names the function to call")
	}
	out, err := req.Call(context.Background(), fn, req.Payload())
	if err != nil {
		return err
	}
	_, err = res.Write(out)
	return err
}
