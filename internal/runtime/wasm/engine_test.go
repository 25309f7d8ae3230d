package wasm

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spry-dev/spry/internal/pool"
)

// guests builds the test guests once per test binary.
var guests struct {
	once sync.Once
	dir  string
	err  error
}

// guest returns the built module of testdata/NAME (a Go program using the
// SDK, built for wasip1). Tests skip when the Go toolchain is missing.
func guest(t testing.TB, name string) []byte {
	t.Helper()
	guests.once.Do(func() {
		guests.dir, guests.err = os.MkdirTemp("", "spry-wasm-guests")
	})
	if guests.err != nil {
		t.Fatal(guests.err)
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go toolchain to build the wasm guests")
	}
	out := filepath.Join(guests.dir, name+".wasm")
	if b, err := os.ReadFile(out); err == nil {
		return b
	}
	b, err := BuildGo(context.Background(), "./testdata/"+name, ".", out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMain(m *testing.M) {
	code := m.Run()
	if guests.dir != "" {
		os.RemoveAll(guests.dir)
	}
	os.Exit(code)
}

// rig is an engine, a function of the suite guest and a pool.
type rig struct {
	t *testing.T
	e *Engine
	f *Function
	p *pool.Pool
}

const testWindow = 64 << 10

func newRig(t *testing.T, c FunctionConfig) *rig {
	t.Helper()
	ctx := context.Background()
	e, err := NewEngine(ctx, EngineConfig{CacheDir: filepath.Join(os.TempDir(), "spry-wasm-test-cache")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(ctx) })
	if c.Module == nil {
		c.Module = guest(t, "suite")
	}
	if c.Name == "" {
		c.Name = "suite"
	}
	if c.Window == 0 {
		c.Window = testWindow
	}
	f, err := e.Load(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close(ctx) })
	p, err := pool.Create("wasmtest", pool.Layout{Buffers: 16, BufferSize: c.Window, Functions: 1, Chains: 1, Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.SetFunction(0, 0, 1); err != nil {
		t.Fatal(err)
	}
	p.SetChain(0, []uint16{0, 0})
	t.Cleanup(func() {
		if free := p.FreeBuffers(); free != int(p.Buffers()) {
			t.Errorf("pool: %d of %d buffers free after the test", free, p.Buffers())
		}
		p.Close()
	})
	return &rig{t: t, e: e, f: f, p: p}
}

const self = 7

// request puts a request into a fresh buffer.
func (r *rig) request(method, target, body string, headers ...string) uint32 {
	buf, ok := r.p.Alloc(self)
	if !ok {
		r.t.Fatal("pool exhausted")
	}
	h := r.p.Header(buf)
	path, query, _ := strings.Cut(target, "?")
	m := h.WriteMeta()
	m.Request([]byte(method), []byte(path), []byte(query))
	for i := 0; i+1 < len(headers); i += 2 {
		m.Header([]byte(headers[i]), []byte(headers[i+1]))
	}
	h.SetReqID(42)
	h.SetChain(0)
	h.SetContentTypeString("text/plain")
	n := copy(r.p.Buffer(buf), body)
	h.SetData(0, uint32(n))
	return buf
}

type result struct {
	status int
	ctype  string
	body   string
	stop   bool
	err    error
}

// step runs one step of in on a new request and frees the buffer after.
func (r *rig) step(in *Instance, target, body string, headers ...string) result {
	buf := r.request("POST", target, body, headers...)
	out, stop, err := in.Step(context.Background(), r.p, self, buf, 0)
	h := r.p.Header(out)
	res := result{status: int(h.Status()), ctype: string(h.ContentType()), body: string(r.p.Data(out)), stop: stop, err: err}
	r.p.Free(out, self)
	return res
}

func (r *rig) instance() *Instance {
	r.t.Helper()
	in, err := r.f.New(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(in.Close)
	return in
}

func TestStepBehaviours(t *testing.T) {
	r := newRig(t, FunctionConfig{})
	in := r.instance()
	for _, c := range []struct {
		target, body string
		headers      []string
		want         result
	}{
		{"/x", "hello", nil, result{body: "HELLO", ctype: "text/plain"}},
		{"/a/b?do=wrap", "in", []string{"X-Test", "yes"}, result{ctype: "text/x-wrapped",
			body: `POST /a/b hop=0/2 id=42 x="yes" ct="text/plain" [in]`}},
		{"/?do=setlen", "a longer payload", nil, result{body: "short", ctype: "text/plain"}},
		{"/?do=status", "tea", nil, result{status: 418, body: "tea", ctype: "text/plain", stop: true}},
		{"/?do=error", "x", nil, result{status: 409, body: "conflict: x", ctype: "text/plain; charset=utf-8", stop: true}},
		{"/?do=plainerror", "x", nil, result{status: 502, body: "plain failure", ctype: "text/plain; charset=utf-8", stop: true}},
		{"/?do=panic", "x", nil, result{status: 502, body: "function panicked: boom", ctype: "text/plain; charset=utf-8", stop: true}},
		{"/?do=stop", "x", nil, result{body: "x", ctype: "text/plain", stop: true}},
		{"/?do=open", "x", nil, result{status: 403, ctype: "text/plain; charset=utf-8", stop: true}},
		{"/?do=socket", "x", nil, result{status: 403, ctype: "text/plain; charset=utf-8", stop: true}},
	} {
		got := r.step(in, c.target, c.body, c.headers...)
		if got.err != nil {
			t.Errorf("%s: %v", c.target, got.err)
			continue
		}
		if c.want.status == 403 {
			// The messages are the guest's; what matters is that it was refused.
			if got.status != 403 || strings.Contains(got.body, "root:") {
				t.Errorf("%s: %d %q, want a refusal", c.target, got.status, got.body)
			}
			continue
		}
		if got != c.want {
			t.Errorf("%s:\n got %+v\nwant %+v", c.target, got, c.want)
		}
	}
	if in.Dead() {
		t.Error("instance dead after handled errors")
	}
}

func TestTrapsKillOnlyTheirInstance(t *testing.T) {
	r := newRig(t, FunctionConfig{Memory: 32 << 20})
	other := r.instance()
	for _, c := range []struct{ do, want string }{
		{"oob", "out of bounds memory access"},
		{"exit", "exited with status 3"},
		{"alloc", "memory limit (32 MiB)"},
		{"recurse", ""},
	} {
		in := r.instance()
		got := r.step(in, "/?do="+c.do, "payload")
		if !errors.Is(got.err, ErrTrap) || !strings.Contains(got.err.Error(), c.want) {
			t.Errorf("%s: err %v, want a trap with %q", c.do, got.err, c.want)
		}
		if !in.Dead() {
			t.Errorf("%s: instance not dead", c.do)
		}
		if got.body != "payload" {
			t.Errorf("%s: the buffer changed to %q", c.do, got.body)
		}
		if got := r.step(other, "/", "still here"); got.err != nil || got.body != "STILL HERE" {
			t.Errorf("after %s: the other instance answered %+v", c.do, got)
		}
	}
}

func TestInterruptSpinningGuest(t *testing.T) {
	r := newRig(t, FunctionConfig{})
	in := r.instance()
	other := r.instance()
	done := make(chan result, 1)
	go func() { done <- r.step(in, "/?do=spin", "x") }()
	time.Sleep(50 * time.Millisecond)
	// Another instance runs meanwhile.
	if got := r.step(other, "/", "meanwhile"); got.body != "MEANWHILE" {
		t.Errorf("other instance: %+v", got)
	}
	select {
	case <-done:
		t.Fatal("a spinning guest returned by itself")
	default:
	}
	// The host's garbage collections go on while the guest spins: compiled
	// wasm cannot be preempted, so the guest must pass safe points.
	gc := make(chan struct{})
	go func() {
		runtime.GC()
		close(gc)
	}()
	select {
	case <-gc:
	case <-time.After(10 * time.Second):
		t.Fatal("a garbage collection waited for the spinning guest")
	}
	in.Interrupt()
	select {
	case got := <-done:
		if !errors.Is(got.err, ErrInterrupted) {
			t.Errorf("err %v, want ErrInterrupted", got.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("interrupt did not stop the guest")
	}
	// Interrupted between steps: the next step is refused untouched.
	idle := r.instance()
	idle.Interrupt()
	if got := r.step(idle, "/", "x"); !errors.Is(got.err, ErrInterrupted) || got.body != "x" {
		t.Errorf("step on an interrupted instance: %+v", got)
	}
}

func TestGuestCannotSeeAnotherGuestsPayload(t *testing.T) {
	r := newRig(t, FunctionConfig{})
	a, b := r.instance(), r.instance()
	secret := "s3cr3t-payload-of-a"
	pad := strings.Repeat(".", 64) // keeps the secret clear of the next payload in a's window
	if got := r.step(a, "/", pad+secret); got.err != nil {
		t.Fatal(got.err)
	}
	// b scans its memory for the payload a was handed (the guest looks for
	// the reverse of what it is given, so its own input is not a match).
	rev := []byte(strings.ToUpper(secret))
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	got := r.step(b, "/?do=scan", string(rev))
	if got.err != nil || !strings.HasPrefix(got.body, "found=false") {
		t.Errorf("b's scan: %+v", got)
	}
	// The same scan on a itself does find it: the test can see a leak.
	got = r.step(a, "/?do=scan", string(rev))
	if got.err != nil || !strings.HasPrefix(got.body, "found=true") {
		t.Errorf("a's own scan: %+v", got)
	}
}

func TestGrants(t *testing.T) {
	none := newRig(t, FunctionConfig{})
	if got := none.step(none.instance(), "/?do=env", ""); got.body != "||0" {
		t.Errorf("no grant: env %q", got.body)
	}
	some := newRig(t, FunctionConfig{Grants: Grants{Env: []string{"GRANTED=yes"}}})
	if got := some.step(some.instance(), "/?do=env", ""); got.body != "yes||1" {
		t.Errorf("env grant: %q", got.body)
	}
}

// Without grants a guest's clocks and randomness are not the host's: its
// wall clock is not the host's time, its sleeps return at once, and every
// instance draws the same random bytes; with them it has the real ones.
func TestClockAndRandomGrants(t *testing.T) {
	none := newRig(t, FunctionConfig{})
	a, b := none.instance(), none.instance()
	if got := none.step(a, "/?do=now", ""); got.err != nil || unixNear(got.body, 24*time.Hour) {
		t.Errorf("no clock grant: the guest's wall clock %+v is the host's", got)
	}
	slept := make(chan result, 1)
	go func() { slept <- none.step(a, "/?do=sleep", "") }()
	select {
	case got := <-slept:
		if got.err != nil || got.body != "slept" {
			t.Errorf("no clock grant: sleep %+v", got)
		}
	case <-time.After(time.Minute):
		t.Fatal("no clock grant: an hour's sleep slept")
	}
	ra, rb := none.step(a, "/?do=random", ""), none.step(b, "/?do=random", "")
	if ra.err != nil || rb.err != nil || ra.body != rb.body {
		t.Errorf("no random grant: two instances drew %+v and %+v, want the same bytes", ra, rb)
	}

	granted := newRig(t, FunctionConfig{Grants: Grants{Clock: true, Random: true}})
	a, b = granted.instance(), granted.instance()
	if got := granted.step(a, "/?do=now", ""); got.err != nil || !unixNear(got.body, time.Minute) {
		t.Errorf("clock grant: the guest's wall clock %+v, want the host's", got)
	}
	ra, rb = granted.step(a, "/?do=random", ""), granted.step(b, "/?do=random", "")
	if ra.err != nil || rb.err != nil || ra.body == rb.body || len(ra.body) != 32 {
		t.Errorf("random grant: two instances drew %+v and %+v, want different bytes", ra, rb)
	}
}

// unixNear says whether s, seconds since the epoch, is within d of now.
func unixNear(s string, d time.Duration) bool {
	sec, err := strconv.ParseInt(s, 10, 64)
	return err == nil && time.Since(time.Unix(sec, 0)).Abs() < d
}

func TestLoadRefusesForeignImports(t *testing.T) {
	e, err := NewEngine(context.Background(), EngineConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(context.Background())
	// (module (import "env" "system" (func)) (memory 1)
	//   (func (export "spry_init") (param i32) (result i32) i32.const 0)
	//   (func (export "spry_handle") (result i32) i32.const 0))
	mod := []byte("\x00asm\x01\x00\x00\x00" +
		"\x01\x0d\x03\x60\x00\x00\x60\x01\x7f\x01\x7f\x60\x00\x01\x7f" + // types
		"\x02\x0e\x01\x03env\x06system\x00\x00" + // import
		"\x03\x03\x02\x01\x02" + // functions
		"\x05\x03\x01\x00\x01" + // memory
		"\x07\x1b\x02\x09spry_init\x00\x01\x0bspry_handle\x00\x02" + // exports
		"\x0a\x0b\x02\x04\x00\x41\x00\x0b\x04\x00\x41\x00\x0b") // code
	_, err = e.Load(context.Background(), FunctionConfig{Name: "bad", Module: mod, Window: testWindow})
	if !errors.Is(err, ErrModule) || !strings.Contains(err.Error(), "env.system") {
		t.Errorf("err %v, want ErrModule naming env.system", err)
	}
	if _, err := e.Load(context.Background(), FunctionConfig{Name: "bad", Module: []byte("not wasm"), Window: testWindow}); err == nil {
		t.Error("loaded garbage")
	}
}

func TestSnapshotClones(t *testing.T) {
	r := newRig(t, FunctionConfig{})
	ok, size, stored, why := r.f.Snapshot()
	if !ok {
		t.Fatalf("no snapshot: %s", why)
	}
	t.Logf("snapshot %d KiB, %d KiB stored; compile %v, init %v", size>>10, stored>>10, r.f.Compile, r.f.Init)
	var ins []*Instance
	for range 20 {
		ins = append(ins, r.instance())
	}
	for i, in := range ins {
		body := bytes.Repeat([]byte{'a' + byte(i)}, 10+i)
		got := r.step(in, "/", string(body))
		if got.err != nil || got.body != strings.ToUpper(string(body)) {
			t.Fatalf("clone %d: %+v", i, got)
		}
	}
}

func TestStepZeroAllocs(t *testing.T) {
	r := newRig(t, FunctionConfig{})
	in := r.instance()
	buf := r.request("POST", "/", "some payload")
	defer r.p.Free(buf, self)
	step := func() {
		if _, _, err := in.Step(context.Background(), r.p, self, buf, 0); err != nil {
			t.Fatal(err)
		}
	}
	step()
	if n := testing.AllocsPerRun(200, step); n != 0 {
		t.Errorf("%v allocations per step, want 0", n)
	}
}

// A payload of MapMin or more is mapped into the guest, not copied: the
// answers are the same, nothing of the buffer beyond the payload shows,
// output beyond the mapped pages comes back, and after the step the guest
// no longer sees the buffer.
func TestMappedPayload(t *testing.T) {
	r := newRig(t, FunctionConfig{MapMin: 4096})
	in := r.instance()
	// A buffer full of another request's bytes, then a payload at an odd
	// offset in the middle of it.
	put := func(target string, off int, payload string) uint32 {
		buf := r.request("POST", target, "")
		b := r.p.Buffer(buf)
		for i := range b {
			b[i] = 'S'
		}
		copy(b[off:], payload)
		r.p.Header(buf).SetData(uint32(off), uint32(len(payload)))
		return buf
	}
	run := func(buf uint32) result {
		out, stop, err := in.Step(context.Background(), r.p, self, buf, 0)
		h := r.p.Header(out)
		res := result{status: int(h.Status()), body: string(r.p.Data(out)), stop: stop, err: err}
		r.p.Free(out, self)
		return res
	}
	payload := strings.Repeat("abc", 4000) // 12000 bytes: mapped
	if got := run(put("/", 5000, payload)); got.err != nil || got.body != strings.ToUpper(payload) {
		t.Fatalf("upper, mapped: %v, %d bytes", got.err, len(got.body))
	}
	if got := run(put("/?do=around", 5000, payload)); got.body != "dirty=0" {
		t.Errorf("around a mapped payload: %q, want nothing of the buffer's other bytes", got.body)
	}
	if got := run(put("/?do=grow", 5000, payload)); got.err != nil || got.body != payload+strings.Repeat("g", 5000) {
		t.Errorf("output grown past the mapped pages: %v, %d bytes", got.err, len(got.body))
	}
	if got := run(put("/?do=error", 9000, payload)); got.status != 409 || !strings.HasPrefix(got.body, "conflict: abcabc") {
		t.Errorf("error message outside the mapped pages: %d %.40q", got.status, got.body)
	}
	if got := run(put("/?do=wrap", 5000, payload)); !strings.HasSuffix(got.body, "["+payload+"]") {
		t.Errorf("fresh output from a mapped payload: %.60q", got.body)
	}
	// The window is the guest's own memory again: the last mapped payload
	// (now upper-cased in the pool only) is nowhere in it.
	secret := strings.Repeat("xyz", 2000) // 6000 bytes: mapped
	run(put("/", 5000, secret))
	rev := []byte(strings.ToUpper(secret)[:64])
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	if got := run(put("/?do=scan", 0, string(rev))); got.err != nil || !strings.HasPrefix(got.body, "found=false") {
		t.Errorf("after the step, the guest still sees the buffer: %+v", got)
	}
	if in.Dead() {
		t.Error("instance dead")
	}
}
