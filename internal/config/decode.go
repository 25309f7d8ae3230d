package config

import (
	"bytes"
	"errors"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// The first phase reads the YAML node tree into specs: every setting with
// the line it came from, or line 0 when the file leaves it out. It reports
// what is wrong with the shape of the file: syntax, unknown and repeated
// keys, values of the wrong type. validate, the second phase, checks the
// values and fills the defaults.

// value is one setting as read from the file.
type value[T any] struct {
	v    T
	line int  // where the file sets it; 0 when it does not
	bad  bool // set, but unusable: the problem is reported already
}

func (x value[T]) ok() bool { return x.line != 0 && !x.bad }

// item is one string of a list, with its own line and field path.
type item struct {
	v    string
	line int
	path string
}

type appSpec struct {
	file, dir  string
	line       int // of the top-level mapping
	name       value[string]
	transport  value[string]
	buffers    value[int64]
	bufferSize value[uint64]
	memory     value[uint64]
	poolLine   int
	inflight   value[int64]
	maxBody    value[uint64]
	tlsLine    int
	tlsCert    value[string]
	tlsKey     value[string]
	secrets    value[[]*secretSpec]
	functions  value[[]*fnSpec]
	chains     value[[]*chainSpec]

	async       value[int64] // limits.async
	activations *activationsSpec
	triggers    value[[]*triggerSpec]
}

type fnSpec struct {
	name string
	line int
	bad  bool // not a mapping: reported already

	builtin     value[string]
	goPkg       value[string]
	exec        value[[]item]
	kinds       kindSpec
	wasm        wasmSpec
	instances   value[int64]
	concurrency value[int64]
	timeout     value[time.Duration]
	env         value[[]envVar]
	envFrom     value[[]item]
	workDir     value[string]
	memory      value[uint64]
	cpu         value[string]
	limitsLine  int
	scale       *scaleSpec
}

// secretSpec is one entry of secrets: a file the node reads, or a value.
type secretSpec struct {
	name  string
	line  int
	file  value[string]
	value value[string]
}

type scaleSpec struct {
	line   int
	min    value[int64]
	max    value[int64]
	slo    value[time.Duration]
	policy value[string]
	window value[time.Duration]
	idle   value[time.Duration]
	sloWin value[time.Duration]
	attain value[float64]
}

type envVar struct {
	key, val string
	line     int
	path     string
}

type chainSpec struct {
	name string
	line int
	bad  bool // not a mapping: reported already

	route   value[string]
	steps   value[[]item]      // a line: steps: [a, b]
	graph   value[[]*stepSpec] // a graph: steps: {a: [b, c], …}
	timeout value[time.Duration]
	methods value[[]item]
	headers value[[]item]
	auth    *authSpec
	record  value[string]
	async   *asyncSpec
}

type authSpec struct {
	line         int
	apiKeys      value[[]item]
	apiKeysFile  value[string]
	apiKeyHeader value[string]
	jwtLine      int
	secret       value[string]
	jwks         value[string]
	issuer       value[string]
	audience     value[string]
	leeway       value[time.Duration]
}

// stepSpec is one step of a graph (steps: as a mapping).
type stepSpec struct {
	name string
	line int
	bad  bool // reported already

	function value[string]
	next     value[[]item]
	choose   value[[]item]
	join     value[string]
	wait     value[time.Duration]
}

// The keys of each mapping, in the order the docs list them.
var (
	appKeys    = []string{"app", "transport", "pool", "limits", "tls", "secrets", "functions", "chains", "activations", "triggers"}
	tlsKeys    = []string{"cert", "key"}
	poolKeys   = []string{"memory", "buffers", "bufferSize"}
	limitKeys  = []string{"inflight", "async", "maxBody"}
	stepKeys   = []string{"function", "next", "choose", "join", "wait"}
	fnKeys     = append([]string{"builtin", "go", "exec"}, append(append(kindKeys, wasmKeys...), "instances", "concurrency", "timeout", "env", "envFrom", "workDir", "limits", "scale")...)
	fnLimKeys  = []string{"memory", "cpu"}
	secretKeys = []string{"file", "value"}
	scaleKeys  = []string{"min", "max", "slo", "sloWindow", "attainment", "policy", "window", "idle"}
	authKeys   = []string{"apiKeys", "apiKeysFile", "apiKeyHeader", "jwt"}
	jwtKeys    = []string{"secret", "jwks", "issuer", "audience", "leeway"}
	chainKeys  = []string{"route", "steps", "timeout", "methods", "headers", "auth", "record", "async"}
)

const wantApp = "want a mapping with app:, functions: and chains:"

// decode reads data into a spec, or returns nil when the file is not a
// YAML mapping at all.
func decode(data []byte, ps *problems) *appSpec {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			ps.add(1, "", "the file is empty; %s", wantApp)
			return nil
		}
		line, msg := syntaxError(err, data)
		ps.add(line, "", "%s", msg)
		return nil
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		line, msg := syntaxError(err, data)
		ps.add(line, "", "%s", msg)
	default:
		ps.add(next.Line, "", "a second YAML document: one file describes one app")
	}
	if len(doc.Content) == 0 {
		ps.add(1, "", "the file is empty; %s", wantApp)
		return nil
	}
	root := deref(doc.Content[0])
	if root.Kind != yaml.MappingNode {
		ps.add(root.Line, "", "%s, got %s", wantApp, got(root))
		return nil
	}

	d := decoder{ps}
	s := &appSpec{line: root.Line}
	d.fields(root, "", appKeys, func(key string, k, v *yaml.Node) {
		switch key {
		case "app":
			s.name = d.str(v, "app")
		case "transport":
			s.transport = d.str(v, "transport")
		case "pool":
			s.poolLine = k.Line
			d.fields(v, "pool", poolKeys, func(key string, k, v *yaml.Node) {
				switch key {
				case "memory":
					s.memory = d.size(v, "pool.memory")
				case "buffers":
					s.buffers = d.int(v, "pool.buffers")
				case "bufferSize":
					s.bufferSize = d.size(v, "pool.bufferSize")
				}
			})
		case "limits":
			d.fields(v, "limits", limitKeys, func(key string, k, v *yaml.Node) {
				switch key {
				case "inflight":
					s.inflight = d.int(v, "limits.inflight")
				case "maxBody":
					s.maxBody = d.size(v, "limits.maxBody")
				case "async":
					s.async = d.int(v, "limits.async")
				}
			})
		case "tls":
			s.tlsLine = k.Line
			d.fields(v, "tls", tlsKeys, func(key string, k, v *yaml.Node) {
				switch key {
				case "cert":
					s.tlsCert = d.str(v, "tls.cert")
				case "key":
					s.tlsKey = d.str(v, "tls.key")
				}
			})
		case "secrets":
			s.secrets.line = k.Line
			s.secrets.bad = !d.entries(v, "secrets", func(name string, k, v *yaml.Node) {
				sp := &secretSpec{name: name, line: k.Line}
				p := join("secrets", name)
				if n := deref(v); n.Kind != yaml.MappingNode {
					d.ps.add(v.Line, p, "want a mapping with file: or value:, got %s", got(n))
					return
				}
				d.fields(v, p, secretKeys, func(key string, k, v *yaml.Node) {
					if key == "file" {
						sp.file = d.str(v, join(p, key))
					} else {
						sp.value = d.str(v, join(p, key))
					}
				})
				s.secrets.v = append(s.secrets.v, sp)
			})
		case "functions":
			s.functions.line = k.Line
			s.functions.bad = !d.entries(v, "functions", func(name string, k, v *yaml.Node) {
				s.functions.v = append(s.functions.v, d.function(name, k, v))
			})
		case "chains":
			s.chains.line = k.Line
			s.chains.bad = !d.entries(v, "chains", func(name string, k, v *yaml.Node) {
				s.chains.v = append(s.chains.v, d.chain(name, k, v))
			})
		case "activations":
			s.activations = d.activations(k, v)
		case "triggers":
			s.triggers.line = k.Line
			s.triggers.bad = !d.entries(v, "triggers", func(name string, k, v *yaml.Node) {
				s.triggers.v = append(s.triggers.v, d.trigger(name, k, v))
			})
		}
	})
	return s
}

type decoder struct {
	ps *problems
}

func (d *decoder) function(name string, k, v *yaml.Node) *fnSpec {
	f := &fnSpec{name: name, line: k.Line}
	path := join("functions", name)
	if n := deref(v); n.Kind != yaml.MappingNode {
		d.ps.add(v.Line, path, "want a mapping with one of %s, got %s", kindList, got(n))
		f.bad = true
		return f
	}
	d.fields(v, path, fnKeys, func(key string, k, v *yaml.Node) {
		p := join(path, key)
		switch key {
		case "builtin":
			f.builtin = d.str(v, p)
		case "go":
			f.goPkg = d.str(v, p)
		case "exec":
			f.exec = d.strs(k, v, p)
		default:
			if d.kindField(&f.kinds, key, p, k, v) || d.wasmField(&f.wasm, key, p, k, v) {
				return
			}
		case "instances":
			f.instances = d.int(v, p)
		case "concurrency":
			f.concurrency = d.int(v, p)
		case "timeout":
			f.timeout = d.duration(v, p)
		case "envFrom":
			f.envFrom = d.strs(k, v, p)
		case "workDir":
			f.workDir = d.str(v, p)
		case "limits":
			f.limitsLine = k.Line
			d.fields(v, p, fnLimKeys, func(key string, k, v *yaml.Node) {
				if key == "memory" {
					f.memory = d.size(v, join(p, key))
				} else {
					f.cpu = d.str(v, join(p, key))
				}
			})
		case "scale":
			sc := &scaleSpec{line: k.Line}
			f.scale = sc
			if n := deref(v); n.Kind != yaml.MappingNode && !isNull(n) {
				d.ps.add(v.Line, p, "want a mapping with min:, max:, slo: and policy:, got %s", got(n))
				return
			}
			d.fields(v, p, scaleKeys, func(key string, k, v *yaml.Node) {
				pp := join(p, key)
				switch key {
				case "min":
					sc.min = d.int(v, pp)
				case "max":
					sc.max = d.int(v, pp)
				case "slo":
					sc.slo = d.duration(v, pp)
				case "policy":
					sc.policy = d.str(v, pp)
				case "window":
					sc.window = d.duration(v, pp)
				case "idle":
					sc.idle = d.duration(v, pp)
				case "sloWindow":
					sc.sloWin = d.duration(v, pp)
				case "attainment":
					sc.attain = d.float(v, pp)
				}
			})
		case "env":
			f.env.line = k.Line
			f.env.bad = !d.entries(v, p, func(key string, k, v *yaml.Node) {
				s := d.str(v, join(p, key))
				if s.ok() {
					f.env.v = append(f.env.v, envVar{key: key, val: s.v, line: k.Line, path: join(p, key)})
				}
			})
		}
	})
	return f
}

func (d *decoder) chain(name string, k, v *yaml.Node) *chainSpec {
	c := &chainSpec{name: name, line: k.Line}
	path := join("chains", name)
	if n := deref(v); n.Kind != yaml.MappingNode {
		d.ps.add(v.Line, path, "want a mapping with route: and steps:, got %s", got(n))
		c.bad = true
		return c
	}
	d.fields(v, path, chainKeys, func(key string, k, v *yaml.Node) {
		p := join(path, key)
		switch key {
		case "route":
			c.route = d.str(v, p)
		case "steps":
			n := deref(v)
			if n.Kind == yaml.MappingNode {
				c.graph.line = k.Line
				c.graph.bad = !d.entries(v, p, func(name string, k, v *yaml.Node) {
					c.graph.v = append(c.graph.v, d.step(name, k, v, join(p, name)))
				})
				return
			}
			if n.Kind == yaml.SequenceNode {
				for i, e := range n.Content {
					if deref(e).Kind != yaml.ScalarNode {
						d.ps.add(e.Line, p+"["+strconv.Itoa(i)+"]", "want a step name, got %s: a list is a line of steps; for a graph (fan-out, join, choices), make steps: a mapping of each step to what follows it", got(deref(e)))
						c.steps.bad = true
					}
				}
				if c.steps.bad {
					c.steps.line = k.Line
					return
				}
			}
			c.steps = d.strs(k, v, p)
		case "timeout":
			c.timeout = d.duration(v, p)
		case "methods":
			c.methods = d.strs(k, v, p)
		case "headers":
			c.headers = d.strs(k, v, p)
		case "auth":
			a := &authSpec{line: k.Line}
			c.auth = a
			if n := deref(v); n.Kind != yaml.MappingNode {
				d.ps.add(v.Line, p, "want a mapping with apiKeys: and/or jwt:, got %s", got(n))
				return
			}
			d.fields(v, p, authKeys, func(key string, k, v *yaml.Node) {
				pp := join(p, key)
				switch key {
				case "apiKeys":
					a.apiKeys = d.strs(k, v, pp)
				case "apiKeysFile":
					a.apiKeysFile = d.str(v, pp)
				case "apiKeyHeader":
					a.apiKeyHeader = d.str(v, pp)
				case "jwt":
					a.jwtLine = k.Line
					d.fields(v, pp, jwtKeys, func(key string, k, v *yaml.Node) {
						ppp := join(pp, key)
						switch key {
						case "secret":
							a.secret = d.str(v, ppp)
						case "jwks":
							a.jwks = d.str(v, ppp)
						case "issuer":
							a.issuer = d.str(v, ppp)
						case "audience":
							a.audience = d.str(v, ppp)
						case "leeway":
							a.leeway = d.duration(v, ppp)
						}
					})
				}
			})
		case "record":
			c.record = d.str(v, p)
		case "async":
			c.async = d.async(p, k, v)
		}
	})
	return c
}

// step reads one step of a graph: a mapping of its settings, or as a
// shorthand what follows it — a name, a list (a fan-out), or nothing (the
// chain ends here).
func (d *decoder) step(name string, k, v *yaml.Node, path string) *stepSpec {
	st := &stepSpec{name: name, line: k.Line}
	n := deref(v)
	switch {
	case isNull(n):
		return st
	case n.Kind == yaml.ScalarNode || n.Kind == yaml.SequenceNode:
		st.next = d.strs(k, v, path)
		st.bad = st.next.bad
		return st
	case n.Kind != yaml.MappingNode:
		d.ps.add(v.Line, path, "want what follows the step (a name, a list) or a mapping with next:, choose:, join:, got %s", got(n))
		st.bad = true
		return st
	}
	d.fields(v, path, stepKeys, func(key string, k, v *yaml.Node) {
		p := join(path, key)
		switch key {
		case "function":
			st.function = d.str(v, p)
		case "next":
			st.next = d.strs(k, v, p)
		case "choose":
			st.choose = d.strs(k, v, p)
		case "join":
			st.join = d.str(v, p)
		case "wait":
			st.wait = d.duration(v, p)
		}
	})
	return st
}

// entries walks the mapping n at path, calling fn for each key and its
// value in file order. It reports keys that are not strings, repeated keys
// and merge keys, and skips them. A null n is an empty mapping. It returns
// false when n is not a mapping.
func (d *decoder) entries(n *yaml.Node, path string, fn func(key string, k, v *yaml.Node)) bool {
	m := deref(n)
	if isNull(m) {
		return true
	}
	if m.Kind != yaml.MappingNode {
		d.ps.add(n.Line, path, "want a mapping, got %s", got(m))
		return false
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		kn := deref(k)
		if kn.Kind != yaml.ScalarNode {
			d.ps.add(k.Line, path, "want a name as key, got %s", got(kn))
			continue
		}
		key := kn.Value
		if kn.ShortTag() == "!!merge" {
			d.ps.add(k.Line, path, "merge keys (<<) are not supported")
			continue
		}
		if first, ok := seen[key]; ok {
			d.ps.add(k.Line, join(path, key), "duplicate key (first at line %d)", first)
			continue
		}
		seen[key] = k.Line
		fn(key, k, v)
	}
	return true
}

// fields is entries for a mapping with the given known keys: any other key
// is a problem.
func (d *decoder) fields(n *yaml.Node, path string, known []string, fn func(key string, k, v *yaml.Node)) {
	d.entries(n, path, func(key string, k, v *yaml.Node) {
		for _, kk := range known {
			if key == kk {
				fn(key, k, v)
				return
			}
		}
		d.ps.add(k.Line, join(path, key), "unknown field (known: %s)", strings.Join(known, ", "))
	})
}

// scalar returns the scalar n, or reports that want was expected.
func (d *decoder) scalar(n *yaml.Node, path, want string) (*yaml.Node, bool) {
	s := deref(n)
	if s.Kind != yaml.ScalarNode || isNull(s) {
		d.ps.add(n.Line, path, "want %s, got %s", want, got(s))
		return s, false
	}
	return s, true
}

// str reads any scalar but null as a string, as written.
func (d *decoder) str(n *yaml.Node, path string) value[string] {
	s, ok := d.scalar(n, path, "a string")
	return value[string]{v: s.Value, line: n.Line, bad: !ok}
}

var digits = regexp.MustCompile(`^[-+]?[0-9]+$`)

func (d *decoder) int(n *yaml.Node, path string) value[int64] {
	x := value[int64]{line: n.Line, bad: true}
	s, ok := d.scalar(n, path, "an integer")
	switch {
	case !ok:
	case s.ShortTag() == "!!float" && digits.MatchString(s.Value):
		d.ps.add(n.Line, path, "%s is too large", s.Value)
	case s.ShortTag() != "!!int" || s.Decode(&x.v) != nil:
		d.ps.add(n.Line, path, "want an integer, got %s", got(s))
	default:
		x.bad = false
	}
	return x
}

// float reads a number (an integer or a decimal).
func (d *decoder) float(n *yaml.Node, path string) value[float64] {
	x := value[float64]{line: n.Line, bad: true}
	s, ok := d.scalar(n, path, "a number")
	switch {
	case !ok:
	case (s.ShortTag() != "!!float" && s.ShortTag() != "!!int") || s.Decode(&x.v) != nil:
		d.ps.add(n.Line, path, "want a number, got %s", got(s))
	default:
		x.bad = false
	}
	return x
}

func (d *decoder) duration(n *yaml.Node, path string) value[time.Duration] {
	x := value[time.Duration]{line: n.Line, bad: true}
	s, ok := d.scalar(n, path, `a duration like "30s"`)
	if !ok {
		return x
	}
	if s.ShortTag() == "!!int" {
		d.ps.add(n.Line, path, `want a duration like "30s", got %s (write %ss for seconds)`, s.Value, s.Value)
		return x
	}
	v, err := time.ParseDuration(s.Value)
	if err != nil {
		d.ps.add(n.Line, path, `want a duration like "30s", got %s`, got(s))
		return x
	}
	x.v, x.bad = v, false
	return x
}

func (d *decoder) size(n *yaml.Node, path string) value[uint64] {
	x := value[uint64]{line: n.Line, bad: true}
	s, ok := d.scalar(n, path, "a size like 64KiB")
	if !ok {
		return x
	}
	v, err := parseSize(s.Value)
	switch {
	case errors.Is(err, errSizeRange):
		d.ps.add(n.Line, path, "%s is too large", s.Value)
	case strings.HasPrefix(s.Value, "-") && err != nil:
		d.ps.add(n.Line, path, "a size cannot be negative, got %s", s.Value)
	case err != nil:
		d.ps.add(n.Line, path, "want a size like 64KiB, got %s", got(s))
	default:
		x.v, x.bad = v, false
	}
	return x
}

// strs reads a list of strings; a single string is a list of one.
func (d *decoder) strs(k, n *yaml.Node, path string) value[[]item] {
	x := value[[]item]{line: k.Line}
	s := deref(n)
	if s.Kind == yaml.ScalarNode && !isNull(s) {
		x.v = []item{{v: s.Value, line: n.Line, path: path}}
		return x
	}
	if s.Kind != yaml.SequenceNode {
		d.ps.add(n.Line, path, "want a list of strings, got %s", got(s))
		x.bad = true
		return x
	}
	for i, e := range s.Content {
		p := path + "[" + strconv.Itoa(i) + "]"
		v := d.str(e, p)
		if !v.ok() {
			x.bad = true
			continue
		}
		x.v = append(x.v, item{v: v.v, line: e.Line, path: p})
	}
	return x
}

// deref follows aliases to the node they name.
func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	if n == nil || n.Kind == yaml.AliasNode {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"}
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// got describes n for a message: a quoted string, a number as written,
// "a list", "a mapping", "nothing" for an empty value.
func got(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.DocumentNode:
		return "a document"
	}
	v := n.Value
	if len(v) > 40 {
		i := 40
		for i > 0 && !utf8.RuneStart(v[i]) {
			i--
		}
		v = v[:i] + "…"
	}
	switch n.ShortTag() {
	case "!!null":
		if v == "" {
			return "nothing"
		}
		return v
	case "!!str":
		return strconv.Quote(v)
	}
	return v
}

// pathKey is key as written in a field path: plain when it is a plain
// word, quoted otherwise.
func pathKey(key string) string {
	if plainKey.MatchString(key) {
		return key
	}
	return "[" + strconv.Quote(key) + "]"
}

var plainKey = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// join appends key to the field path.
func join(path, key string) string {
	k := pathKey(key)
	if path == "" || strings.HasPrefix(k, "[") {
		return path + k
	}
	return path + "." + k
}

// syntaxError turns a yaml.v3 parse error into a line and a message.
func syntaxError(err error, data []byte) (int, string) {
	msg := err.Error()
	line := 0
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = "yaml: " + m[2]
	}
	problem := strings.TrimPrefix(msg, "yaml: ")
	switch {
	case parserProblems[problem]:
		// yaml.v3 counts the lines of parser (not scanner) errors from 0.
		line++
	case line != 0:
	case strings.HasPrefix(problem, "unknown anchor '"):
		name := strings.TrimSuffix(strings.TrimPrefix(problem, "unknown anchor '"), "' referenced")
		line = aliasLine(data, name)
	case strings.Contains(problem, "UTF-8") || strings.Contains(problem, "Unicode") || strings.Contains(problem, "control character"):
		line = badCharLine(data) // a reader error: it has no line
	default:
		line = 1 // a scanner error on line 1 comes without a line
	}
	return line, msg
}

// lineCount returns the number of lines in data as yaml.v3 counts them
// (breaks are \n, \r\n, \r, U+0085, U+2028, U+2029), at least 1.
func lineCount(data []byte) int {
	n, last := 1, true // last: at the start of an empty line
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		i += size
		switch {
		case r == '\r' && i < len(data) && data[i] == '\n':
			continue // counted with the \n
		case r == '\n' || r == '\r' || r == 0x85 || r == 0x2028 || r == 0x2029:
			n++
			last = true
		default:
			last = false
		}
	}
	if last && len(data) > 0 {
		n-- // the file ends in a line break: no line after it
	}
	return n
}

var yamlLine = regexp.MustCompile(`^yaml: line ([0-9]+): (.*)$`)

// parserProblems are the messages of yaml.v3's parser errors (see its
// parserc.go), as opposed to its scanner errors.
var parserProblems = map[string]bool{
	"did not find expected <stream-start>":   true,
	"did not find expected <document start>": true,
	"found undefined tag handle":             true,
	"did not find expected node content":     true,
	"did not find expected '-' indicator":    true,
	"did not find expected key":              true,
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"found duplicate %YAML directive":        true,
	"found incompatible YAML document":       true,
	"found duplicate %TAG directive":         true,
}

// aliasLine returns the line of the first *name in data, or 0.
func aliasLine(data []byte, name string) int {
	for i, l := range bytes.Split(data, []byte("\n")) {
		for rest := l; ; {
			j := bytes.Index(rest, []byte("*"+name))
			if j < 0 {
				break
			}
			rest = rest[j+1+len(name):]
			if len(rest) == 0 || bytes.IndexByte([]byte(" \t\r,]}"), rest[0]) >= 0 {
				return i + 1
			}
		}
	}
	return 0
}

// badCharLine returns the line of the first byte that the YAML reader
// refuses (invalid UTF-8, a control character), or 0.
func badCharLine(data []byte) int {
	line := 1
	for len(data) > 0 {
		r, n := utf8.DecodeRune(data)
		ok := r == '\t' || r == '\n' || r == '\r' || (r >= 0x20 && r <= 0x7e) || r == 0x85 ||
			(r >= 0xa0 && r <= 0xd7ff) || (r >= 0xe000 && r <= 0xfffd) || (r >= 0x10000 && r <= 0x10ffff)
		if r == utf8.RuneError && n == 1 || !ok {
			return line
		}
		if r == '\n' {
			line++
		}
		data = data[n:]
	}
	return 0
}
