package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spry-dev/spry/internal/pool"
	"github.com/spry-dev/spry/internal/route"
)

// Defaults and limits. The pool's limits are the pool package's own.
const (
	DefaultBuffers    = 1024
	DefaultBufferSize = 64 << 10
	// DefaultMemory is a pool's memory when pool.memory is not set: the
	// buffers plus the large-extent region (committed only as it is used).
	DefaultMemory = 1 << 30
	// DefaultMaxBody is the largest request body when limits.maxBody is
	// not set (at most what the pool's extent region holds).
	DefaultMaxBody = 32 << 20
	// MaxMemory bounds pool.memory.
	MaxMemory      = 1 << 40
	DefaultTimeout = 30 * time.Second // of a step and of a chain
	MaxTimeout     = time.Hour
	MaxInstances   = 256
	MaxConcurrency = 1024
	MaxSteps       = pool.MaxSteps
	MaxHeaders     = 16
	MaxRoute       = 256 // bytes
	maxAppName     = 32
	maxName        = 64
)

// DefaultMethods are the methods a chain answers when it names none.
var DefaultMethods = []string{"GET", "POST"}

var (
	appName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	name    = regexp.MustCompile(`^[a-z0-9]([a-z0-9_-]*[a-z0-9])?$`)
	envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

var transports = []string{TransportAuto, TransportSKMsg, TransportUDS, TransportPoll, TransportAdaptive}

// validate checks every value of s, fills the defaults and returns the
// app, adding every problem to ps. The app is complete only when no
// problem was added; otherwise it holds what could be made of s.
func (s *appSpec) validate(o Options, ps *problems) *App {
	a := &App{File: s.file, Dir: s.dir, Line: s.name.line, fnIndex: map[string]int{}}

	switch v := s.name.v; {
	case s.name.line == 0:
		ps.add(s.line, "app", "missing; want the app's name, e.g. app: hello")
	case s.name.bad:
	case len(v) > maxAppName || !appName.MatchString(v):
		ps.add(s.name.line, "app", "%s is not a valid app name: want lower-case letters, digits and '-' (not at either end), at most %d characters",
			strconv.Quote(v), maxAppName)
	default:
		a.Name = v
	}

	a.Transport = TransportAuto
	if s.transport.ok() {
		if v := s.transport.v; slices.Contains(transports, v) {
			a.Transport = v
		} else {
			ps.add(s.transport.line, "transport", "unknown transport %q (known: %s)", v, strings.Join(transports, ", "))
		}
	}

	a.Pool.Buffers = DefaultBuffers
	if b := s.buffers; b.ok() {
		if b.v < pool.MinBuffers || b.v > pool.MaxBuffers {
			ps.add(b.line, "pool.buffers", "want %d..%d, got %d", pool.MinBuffers, pool.MaxBuffers, b.v)
		} else {
			a.Pool.Buffers = uint32(b.v)
		}
	}
	a.Pool.BufferSize = DefaultBufferSize
	if b := s.bufferSize; b.ok() {
		if b.v < pool.MinBufferSize || b.v > pool.MaxBufferSize {
			ps.add(b.line, "pool.bufferSize", "want %s..%s, got %s",
				formatSize(pool.MinBufferSize), formatSize(pool.MaxBufferSize), formatSize(b.v))
		} else {
			a.Pool.BufferSize = uint32(b.v)
		}
	}
	arena := uint64(a.Pool.Buffers) * uint64(a.Pool.BufferSize)
	a.Pool.Memory = max(DefaultMemory, arena)
	if m := s.memory; m.ok() {
		switch {
		case m.v > MaxMemory:
			ps.add(m.line, "pool.memory", "want at most %s, got %s", formatSize(MaxMemory), formatSize(m.v))
		case m.v < arena:
			ps.add(m.line, "pool.memory", "%s is less than the buffers need (pool.buffers × pool.bufferSize = %s)", formatSize(m.v), formatSize(arena))
		default:
			a.Pool.Memory = m.v
		}
	}
	ext := a.Pool.ExtentBytes()
	a.Limits.MaxBody = uint64(a.Pool.BufferSize)
	if ext > 0 {
		a.Limits.MaxBody = max(a.Limits.MaxBody, min(DefaultMaxBody, ext))
	}
	if mb := s.maxBody; mb.ok() {
		switch {
		case mb.v < 1:
			ps.add(mb.line, "limits.maxBody", "want at least 1 byte, got 0")
		case mb.v > pool.MaxPayload:
			ps.add(mb.line, "limits.maxBody", "want at most %s, got %s", formatSize(pool.MaxPayload), formatSize(mb.v))
		case mb.v > uint64(a.Pool.BufferSize) && mb.v > ext:
			ps.add(mb.line, "limits.maxBody", "%s does not fit the pool: bodies larger than pool.bufferSize (%s) go to the large-extent region, and pool.memory (%s) leaves %s for it after the buffers; raise pool.memory", formatSize(mb.v), formatSize(uint64(a.Pool.BufferSize)), formatSize(a.Pool.Memory), formatSize(ext))
		default:
			a.Limits.MaxBody = mb.v
		}
	}
	a.Limits.Inflight = max(1, int(a.Pool.Buffers)/2)
	if in := s.inflight; in.ok() {
		if in.v < 1 || in.v > int64(a.Pool.Buffers) {
			ps.add(in.line, "limits.inflight", "want 1..%d (at most pool.buffers), got %d", a.Pool.Buffers, in.v)
		} else {
			a.Limits.Inflight = int(in.v)
		}
	}

	s.validateSecrets(a, o, ps)
	s.validateTLS(a, ps)
	s.validateFunctions(a, o, ps)
	s.checkTransports(a, ps)
	s.validateChains(a, o, ps)
	s.validateEvents(a, ps)
	return a
}

// validateTLS checks the gateway's certificate and key files: both or
// neither, each a readable file (relative to the config's directory).
func (s *appSpec) validateTLS(a *App, ps *problems) {
	if s.tlsLine == 0 {
		return
	}
	file := func(v value[string], path, what string) string {
		switch {
		case v.line == 0:
			ps.add(s.tlsLine, path, "missing; want the %s file (PEM) beside tls.%s", what, map[string]string{"tls.cert": "key", "tls.key": "cert"}[path])
			return ""
		case v.bad:
			return ""
		}
		f := v.v
		if !filepath.IsAbs(f) {
			f = filepath.Join(s.dir, f)
		}
		if st, err := os.Stat(f); err != nil {
			ps.add(v.line, path, "%s: %s", v.v, reason(err))
			return ""
		} else if st.IsDir() {
			ps.add(v.line, path, "%s is a directory; want the %s file (PEM)", v.v, what)
			return ""
		}
		return f
	}
	a.TLS.Cert = file(s.tlsCert, "tls.cert", "certificate")
	a.TLS.Key = file(s.tlsKey, "tls.key", "private key")
	if a.TLS.Cert == "" || a.TLS.Key == "" {
		a.TLS = TLS{}
	}
}

func (s *appSpec) validateFunctions(a *App, o Options, ps *problems) {
	switch fns := s.functions; {
	case fns.line == 0:
		ps.add(s.line, "functions", "missing; want at least one function")
	case fns.bad:
	case len(fns.v) == 0:
		ps.add(fns.line, "functions", "want at least one function")
	case len(fns.v) > pool.MaxFunctions:
		ps.add(fns.line, "functions", "want at most %d functions, got %d", pool.MaxFunctions, len(fns.v))
	}
	slots := 0
	for _, spec := range s.functions.v {
		f := spec.validate(s.dir, o, ps)
		f.Index, f.File = len(a.Functions), s.file
		a.fnIndex[f.Name] = f.Index
		a.Functions = append(a.Functions, f)
		slots += f.Scale.Max
	}
	if slots > pool.MaxSlots {
		ps.add(s.functions.line, "functions", "%d instances in all; want at most %d", slots, pool.MaxSlots)
	}
}

func (sp *fnSpec) validate(dir string, o Options, ps *problems) *Function {
	path := join("functions", sp.name)
	f := &Function{Name: sp.name, Line: sp.line, Instances: 1, Concurrency: 1, Timeout: DefaultTimeout}
	if len(sp.name) > maxName || !name.MatchString(sp.name) {
		ps.add(sp.line, path, "%s is not a valid function name: want lower-case letters, digits, '-' and '_' (not '-' or '_' at either end), at most %d characters",
			strconv.Quote(sp.name), maxName)
	}
	if sp.bad {
		return f
	}

	var kinds []string
	for _, k := range append([]struct {
		key  string
		line int
	}{{"builtin:", sp.builtin.line}, {"go:", sp.goPkg.line}, {"exec:", sp.exec.line}, {"wasm:", sp.wasm.wasm.line}}, sp.kinds.lines()...) {
		if k.line != 0 {
			kinds = append(kinds, k.key)
		}
	}
	switch {
	case len(kinds) == 0:
		ps.add(sp.line, path, "want one of %s", kindList)
	case len(kinds) > 1:
		ps.add(sp.line, path, "want only one of %s, got %s", kindList, strings.Join(kinds, " and "))
	case sp.builtin.ok():
		f.Kind, f.Builtin = Builtin, sp.builtin.v
		if o.Builtins != nil && !o.Builtins(f.Builtin) {
			msg := fmt.Sprintf("unknown builtin %q", f.Builtin)
			if len(o.BuiltinNames) > 0 {
				msg += " (known: " + list(o.BuiltinNames) + ")"
			}
			ps.add(sp.builtin.line, path+".builtin", "%s", msg)
		}
	case sp.goPkg.ok():
		f.Kind = Go
		f.Go = goPackage(sp.goPkg.v, dir, sp.goPkg.line, path+".go", ps)
	case sp.exec.ok():
		f.Kind = Exec
		f.Exec = program(sp.exec.v, dir, sp.exec.line, path+".exec", ps)
	case sp.wasm.wasm.ok():
		sp.wasm.validate(f, dir, path, ps)
	default:
		sp.kinds.validate(f, dir, path, ps)
	}

	if n := sp.instances; n.ok() {
		lo := int64(1)
		if sp.scale != nil {
			lo = 0 // a scaled function may start with none
		}
		if n.v < lo || n.v > MaxInstances {
			ps.add(n.line, path+".instances", "want %d..%d, got %d", lo, MaxInstances, n.v)
		} else {
			f.Instances = int(n.v)
		}
	}
	f.Scale = Scale{Policy: PolicyFixed, Min: f.Instances, Max: f.Instances}
	if sp.scale != nil {
		sp.scale.validate(f, sp.instances.ok(), path+".scale", ps)
	}
	if n := sp.concurrency; n.ok() {
		if n.v < 1 || n.v > MaxConcurrency {
			ps.add(n.line, path+".concurrency", "want 1..%d, got %d", MaxConcurrency, n.v)
		} else {
			f.Concurrency = int(n.v)
		}
	}
	f.Timeout = timeout(sp.timeout, path+".timeout", ps)
	sp.kinds.check(f, sp, path, ps)
	for _, it := range sp.envFrom.v {
		p, why := expand(it.v, o.getenv)
		if why == "" {
			var err error
			if p, err = resolve(p, dir); err != nil {
				why = err.Error()
			}
		}
		var kvs []string
		if why == "" {
			kvs, why = readEnvFile(p)
		}
		if why != "" {
			ps.add(it.line, it.path, "%s", why)
			continue
		}
		f.EnvFrom = append(f.EnvFrom, p)
		for _, kv := range kvs {
			f.Env = setEnv(f.Env, kv)
		}
	}
	for _, e := range sp.env.v {
		v, why := expand(e.val, o.getenv)
		switch {
		case !envName.MatchString(e.key):
			ps.add(e.line, e.path, "not a valid variable name: want letters, digits and '_', not a digit first")
		case strings.HasPrefix(e.key, "SPRY_"):
			ps.add(e.line, e.path, "SPRY_ variables are reserved for spry")
		case why != "":
			ps.add(e.line, e.path, "%s", why)
		case strings.IndexByte(v, 0) >= 0:
			ps.add(e.line, e.path, "the value contains a NUL byte")
		default:
			f.Env = setEnv(f.Env, e.key+"="+v)
		}
	}
	f.WorkDir = workDir(f, sp.workDir, dir, path+".workDir", ps)
	f.WorkDirSet = sp.workDir.ok()
	sp.validateLimits(f, path+".limits", ps)
	sp.wasm.check(f, sp, path, ps)
	return f
}

// workDir resolves a function's working directory: workDir: against the
// file's directory, or by default the directory of its source: a go:
// package's directory, else the file's directory.
func workDir(f *Function, wd value[string], dir, path string, ps *problems) string {
	if !wd.ok() {
		if f.Kind == Go && filepath.IsAbs(f.Go) {
			return f.Go
		}
		if f.Kind == Python && f.Python != "" {
			return filepath.Dir(f.Python)
		}
		if dir == "" {
			return "/"
		}
		return dir
	}
	p, err := resolve(wd.v, dir)
	if err == nil {
		var fi fs.FileInfo
		if fi, err = os.Stat(p); err == nil && !fi.IsDir() {
			err = errors.New("not a directory")
		}
	}
	if err != nil {
		ps.add(wd.line, path, "%s: %s", p, reason(err))
	}
	return p
}

// Bounds of a function's limits.
const (
	MinMemoryLimit = 8 << 20
	MaxCPULimit    = 1024
)

func (sp *fnSpec) validateLimits(f *Function, path string, ps *problems) {
	if m := sp.memory; m.ok() {
		if m.v < MinMemoryLimit {
			ps.add(m.line, path+".memory", "want at least %s (an instance's runtime needs it), got %s", formatSize(MinMemoryLimit), formatSize(m.v))
		} else {
			f.Limits.Memory = m.v
		}
	}
	if c := sp.cpu; c.ok() {
		v, err := parseCPU(c.v)
		if err != nil || !(v > 0 && v <= MaxCPULimit) {
			ps.add(c.line, path+".cpu", "want CPUs, more than 0 and at most %d, like 0.5 or 500m, got %q", MaxCPULimit, c.v)
		} else {
			f.Limits.CPU = v
		}
	}
}

// parseCPU reads CPUs as a number (0.5) or millicores (500m).
func parseCPU(s string) (float64, error) {
	if m, ok := strings.CutSuffix(s, "m"); ok {
		v, err := strconv.ParseUint(m, 10, 32)
		return float64(v) / 1000, err
	}
	return strconv.ParseFloat(s, 64)
}

// validate fills f.Scale from a scale: block, and f.Instances (the count at
// start) when instances: was not given: min, or 1 when min is 0 (a
// function scaled to zero starts with one instance; it goes to zero when
// idle).
func (sc *scaleSpec) validate(f *Function, haveInstances bool, path string, ps *problems) {
	s := Scale{Policy: PolicyMu, Min: 1, Max: DefaultMaxInstances, SLO: DefaultSLO}
	if p := sc.policy; p.ok() {
		switch p.v {
		case PolicyMu, PolicyKPA, PolicyFixed:
			s.Policy = p.v
		default:
			ps.add(p.line, path+".policy", "unknown policy %q (known: mu, kpa, fixed)", p.v)
		}
	}
	minOK := true
	if n := sc.min; n.ok() {
		if n.v < 0 || n.v > MaxInstances {
			ps.add(n.line, path+".min", "want 0..%d, got %d", MaxInstances, n.v)
			minOK = false
		} else {
			s.Min = int(n.v)
		}
	}
	if n := sc.max; n.ok() {
		if n.v < 1 || n.v > MaxInstances {
			ps.add(n.line, path+".max", "want 1..%d, got %d", MaxInstances, n.v)
		} else {
			s.Max = int(n.v)
			if minOK && s.Min > s.Max {
				ps.add(n.line, path+".max", "%d is below min (%d)", s.Max, s.Min)
			}
		}
	} else if s.Min > s.Max {
		s.Max = s.Min
	}
	if t := sc.slo; t.ok() {
		if t.v <= 0 || t.v > MaxTimeout {
			ps.add(t.line, path+".slo", "want more than 0s and at most 1h, got %s", t.v)
		} else {
			s.SLO = t.v
		}
	}
	for _, d := range []struct {
		v   value[time.Duration]
		key string
		dst *time.Duration
	}{{sc.window, "window", &s.Window}, {sc.idle, "idle", &s.Idle}, {sc.sloWin, "sloWindow", &s.SLOWindow}} {
		if !d.v.ok() {
			continue
		}
		if d.v.v <= 0 || d.v.v > MaxTimeout {
			ps.add(d.v.line, path+"."+d.key, "want more than 0s and at most 1h, got %s", d.v.v)
		} else {
			*d.dst = d.v.v
		}
	}
	if a := sc.attain; a.ok() {
		if !(a.v >= 0.5 && a.v < 1) {
			ps.add(a.line, path+".attainment", "want a share of windows in [0.5, 1) (0.999: 999 windows in 1000), got %v", a.v)
		} else {
			s.Attainment = a.v
		}
	}
	if !haveInstances {
		f.Instances = max(s.Min, 1)
	}
	if s.Min <= s.Max && (f.Instances < s.Min || f.Instances > s.Max) {
		ps.add(sc.line, path, "instances (%d) is outside min..max (%d..%d)", f.Instances, s.Min, s.Max)
	}
	f.Scale = s
}

// timeout checks a step's or chain's timeout, or returns the default.
func timeout(t value[time.Duration], path string, ps *problems) time.Duration {
	if !t.ok() {
		return DefaultTimeout
	}
	if t.v <= 0 || t.v > MaxTimeout {
		ps.add(t.line, path, "want more than 0s and at most %s, got %s", "1h", t.v)
		return DefaultTimeout
	}
	return t.v
}

// goPackage resolves go: to an absolute directory, or checks that it is an
// import path.
func goPackage(v, dir string, line int, path string, ps *problems) string {
	if !isLocalPath(v) {
		// No element may be empty or start with '.' or '-' (the go command
		// would read a leading '-' as a flag).
		if !importPath.MatchString(v) || slices.ContainsFunc(strings.Split(v, "/"), func(e string) bool { return e == "" || e[0] == '.' || e[0] == '-' }) {
			ps.add(line, path, "%q is neither a directory (./dir) nor an import path", v)
		}
		return v
	}
	p, err := resolve(v, dir)
	if err == nil {
		var fi fs.FileInfo
		if fi, err = os.Stat(p); err == nil && !fi.IsDir() {
			err = errors.New("not a directory")
		}
	}
	if err != nil {
		ps.add(line, path, "%s: %s", p, reason(err))
	}
	return p
}

// importPath is the syntax of an import path, loosely: the characters the
// go command accepts in one.
var importPath = regexp.MustCompile(`^[A-Za-z0-9._~+-]+(/[A-Za-z0-9._~+-]+)*$`)

// isLocalPath reports whether p is a filesystem path rather than an import
// path, as the go command tells them apart.
func isLocalPath(p string) bool {
	return p == "." || p == ".." || strings.HasPrefix(p, "./") || strings.HasPrefix(p, "../") || filepath.IsAbs(p)
}

// program resolves the program of exec: to an absolute path: relative to
// dir when it has a slash, else looked up in $PATH. It returns the program
// and the arguments.
func program(args []item, dir string, line int, path string, ps *problems) []string {
	var out []string
	for _, a := range args {
		if strings.IndexByte(a.v, 0) >= 0 {
			ps.add(a.line, a.path, "contains a NUL byte")
			return nil
		}
		out = append(out, a.v)
	}
	if len(args) == 0 || args[0].v == "" {
		ps.add(line, path, "want a program and its arguments, e.g. exec: [./bin/fn, --flag]")
		return nil
	}
	prog, l := args[0].v, args[0].line
	if !strings.Contains(prog, "/") {
		p, err := exec.LookPath(prog)
		if err == nil {
			p, err = filepath.Abs(p)
		}
		if err != nil {
			hint := " (write ./" + prog + " for a file beside the config)"
			if strings.ContainsAny(prog, " \t") {
				hint = " (to pass arguments, write a list: exec: [program, arg])"
			}
			ps.add(l, path, "program %q not found in $PATH%s", prog, hint)
			return out
		}
		out[0] = p
		return out
	}
	p, err := resolve(prog, dir)
	if err == nil {
		var fi fs.FileInfo
		if fi, err = os.Stat(p); err == nil {
			switch {
			case fi.IsDir():
				err = errors.New("is a directory")
			case fi.Mode()&0o111 == 0:
				err = errors.New("not executable")
			}
		}
	}
	if err != nil {
		hint := ""
		if errors.Is(err, fs.ErrNotExist) && strings.ContainsAny(prog, " \t") {
			hint = " (to pass arguments, write a list: exec: [program, arg])"
		}
		ps.add(l, path, "%s: %s%s", p, reason(err), hint)
	}
	out[0] = p
	return out
}

// resolve makes p absolute, relative to dir ("" is the working directory).
func resolve(p, dir string) (string, error) {
	if !filepath.IsAbs(p) {
		p = filepath.Join(dir, p)
	}
	return filepath.Abs(p)
}

// reason is err for a message, without the path that the message shows
// already.
func reason(err error) string {
	var pe *fs.PathError
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "no such file or directory"
	case errors.As(err, &pe):
		return pe.Err.Error()
	}
	return err.Error()
}

func (s *appSpec) validateChains(a *App, o Options, ps *problems) {
	switch cs := s.chains; {
	case cs.line == 0:
		ps.add(s.line, "chains", "missing; want at least one chain")
	case cs.bad:
	case len(cs.v) == 0:
		ps.add(cs.line, "chains", "want at least one chain")
	case len(cs.v) > pool.MaxChains:
		ps.add(cs.line, "chains", "want at most %d chains, got %d", pool.MaxChains, len(cs.v))
	}
	var fnNames []string
	for _, f := range a.Functions {
		fnNames = append(fnNames, f.Name)
	}
	routes := map[string]*Chain{}
	for _, cs := range s.chains.v {
		c := cs.validate(a, fnNames, o, ps)
		c.Index, c.File = len(a.Chains), s.file
		a.Chains = append(a.Chains, c)
		if c.Route == "" {
			continue
		}
		if first, ok := routes[route.Shape(c.Route)]; ok {
			ps.add(c.routeLine, join(join("chains", c.Name), "route"), "%s is already served by chain %q (line %d)%s", c.Route, first.Name, first.routeLine, sameAs(c.Route, first.Route))
			continue
		}
		routes[route.Shape(c.Route)] = c
	}
}

func (cs *chainSpec) validate(a *App, fnNames []string, o Options, ps *problems) *Chain {
	path := join("chains", cs.name)
	c := &Chain{Name: cs.name, Line: cs.line, Timeout: DefaultTimeout, Methods: slices.Clone(DefaultMethods)}
	if len(cs.name) > maxName || !name.MatchString(cs.name) {
		ps.add(cs.line, path, "%s is not a valid chain name: want lower-case letters, digits, '-' and '_' (not '-' or '_' at either end), at most %d characters",
			strconv.Quote(cs.name), maxName)
	}
	if cs.bad {
		return c
	}

	switch r := cs.route; {
	case r.line == 0:
		ps.add(cs.line, path+".route", "missing; want an HTTP path, e.g. route: /%s", cs.name)
	case r.bad:
	default:
		if why := checkRoute(r.v); why != "" {
			ps.add(r.line, path+".route", "%s is not a valid route: %s", strconv.Quote(r.v), why)
		} else {
			c.Route, c.routeLine = r.v, r.line
		}
	}

	cs.validateSteps(a, c, fnNames, path, ps)
	c.Timeout = timeout(cs.timeout, path+".timeout", ps)
	cs.checkWaits(c, path+".steps", ps)
	if cs.auth != nil {
		c.Auth, c.AuthSum = cs.auth.validate(a.Dir, o, path+".auth", ps)
	}

	if m := cs.methods; m.ok() {
		c.Methods = nil
		if len(m.v) == 0 {
			ps.add(m.line, path+".methods", "want at least one method")
		}
		for _, it := range m.v {
			v := strings.ToUpper(it.v)
			switch {
			case !isToken(v):
				ps.add(it.line, it.path, "%s is not an HTTP method", strconv.Quote(it.v))
			case slices.Contains(c.Methods, v):
				ps.add(it.line, it.path, "duplicate method %s", v)
			default:
				c.Methods = append(c.Methods, v)
			}
		}
	}

	if h := cs.headers; h.ok() {
		if len(h.v) > MaxHeaders {
			ps.add(h.line, path+".headers", "want at most %d headers, got %d", MaxHeaders, len(h.v))
		}
		for _, it := range h.v {
			v := textproto.CanonicalMIMEHeaderKey(it.v)
			switch {
			case !isToken(it.v):
				ps.add(it.line, it.path, "%s is not an HTTP header name", strconv.Quote(it.v))
			case slices.Contains(c.Headers, v):
				ps.add(it.line, it.path, "duplicate header %s", v)
			default:
				c.Headers = append(c.Headers, v)
			}
		}
	}
	return c
}

// checkRoute returns why r is not a valid route, or "".
func checkRoute(r string) string {
	switch {
	case !strings.HasPrefix(r, "/"):
		return "want a path that starts with '/'"
	case len(r) > MaxRoute:
		return fmt.Sprintf("longer than %d bytes", MaxRoute)
	case !utf8.ValidString(r):
		return "not valid UTF-8"
	case strings.ContainsAny(r, "?#"):
		return "want a path without '?' or '#'"
	case strings.ContainsFunc(r, func(c rune) bool { return c <= ' ' || c == 0x7f }):
		return "want a path without spaces or control characters"
	case strings.Contains(r, "//"):
		return "want a path without empty segments (//)"
	}
	for _, seg := range strings.Split(r, "/") {
		if seg == "." || seg == ".." {
			return "want a path without . or .. segments"
		}
	}
	if route.IsPattern(r) {
		if err := route.Check(r); err != nil {
			return err.Error()
		}
	}
	return ""
}

// isToken reports whether s is an HTTP token (RFC 9110 section 5.6.2).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// list joins names for a message, cut short when there are many.
func list(names []string) string {
	const most = 16
	if len(names) > most {
		return strings.Join(names[:most], ", ") + fmt.Sprintf(", … (%d more)", len(names)-most)
	}
	return strings.Join(names, ", ")
}

// sameAs explains a conflict between two routes of one shape that are not
// written alike.
func sameAs(r, other string) string {
	if r == other {
		return ""
	}
	return " as " + other + " (the same route: parameter names do not tell routes apart)"
}
