// Package route matches request paths to routes: exact paths, {name}
// parameters and a trailing * wildcard, most specific first, with no
// allocation per lookup. The gateway routes by it and the config loader
// checks routes with it.
package route

import (
	"fmt"
	"slices"
	"strings"
)

// A route is a path pattern:
//
//	/hello             exact
//	/users/{id}        {name} matches one non-empty path segment
//	/static/*          a trailing * matches the rest of the path (empty too);
//	                   the rest, from its slash ("/css/a.css"), is parameter "*"
//	/users/{id}/files/*
//
// Exact routes are one map lookup. Patterns are tried after, most specific
// first: comparing two patterns segment by segment, a literal beats a
// parameter, which beats the wildcard, and a pattern that ends beats one
// that goes on. Two patterns of the same shape (the same literals, and
// parameters and wildcard in the same places, whatever their names)
// conflict. Matching allocates nothing: a parameter is a span of the
// request's path.

// MaxParams bounds the parameters of one route.
const MaxParams = 8

type segKind uint8

const (
	segEnd      segKind = iota // the pattern ended here (most specific)
	segLiteral                 // a fixed segment
	segParam                   // {name}
	segWildcard                // * (the rest)
)

type segment struct {
	kind segKind
	lit  string // segLiteral: the text; segParam: the name
}

// pattern is a parsed route with parameters or a wildcard.
type pattern[T any] struct {
	route string
	segs  []segment
	v     T
}

// Table maps routes to values of type T.
type Table[T any] struct {
	exact    map[string]T
	patterns []*pattern[T] // most specific first
	shapes   map[string]string
}

// Span is a parameter's value: path[Off:Off+N].
type Span struct{ Off, N uint16 }

// Params are the parameters a lookup matched, as spans of the path, with
// their names (the route's). The wildcard's is "*".
type Params struct {
	N     int
	Names [MaxParams]string
	Vals  [MaxParams]Span
}

// IsPattern reports whether route has parameters or a wildcard.
func IsPattern(route string) bool { return strings.ContainsAny(route, "{*") }

// parsePattern splits a route into segments, or says what is wrong with it.
func parsePattern(route string) ([]segment, error) {
	if !strings.HasPrefix(route, "/") {
		return nil, fmt.Errorf("want a path that starts with '/'")
	}
	parts := strings.Split(route[1:], "/")
	var segs []segment
	var names []string
	for i, p := range parts {
		switch {
		case p == "*":
			if i != len(parts)-1 {
				return nil, fmt.Errorf("* must be the last segment (it matches the rest of the path)")
			}
			segs = append(segs, segment{kind: segWildcard})
		case strings.HasPrefix(p, "{") && strings.HasSuffix(p, "}"):
			name := p[1 : len(p)-1]
			if !isParamName(name) {
				return nil, fmt.Errorf("{%s}: want a parameter name of letters, digits and '_', not a digit first", name)
			}
			if slices.Contains(names, name) {
				return nil, fmt.Errorf("parameter {%s} appears twice", name)
			}
			names = append(names, name)
			segs = append(segs, segment{kind: segParam, lit: name})
		case strings.ContainsAny(p, "{}*"):
			return nil, fmt.Errorf("segment %q: a parameter is a whole segment ({name}) and * a whole last segment", p)
		default:
			segs = append(segs, segment{kind: segLiteral, lit: p})
		}
	}
	if len(names) > MaxParams {
		return nil, fmt.Errorf("%d parameters; want at most %d", len(names), MaxParams)
	}
	return segs, nil
}

func isParamName(s string) bool {
	if s == "" || '0' <= s[0] && s[0] <= '9' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// Check reports what is wrong with route as a pattern, or nil.
func Check(route string) error {
	_, err := parsePattern(route)
	return err
}

// Shape is route with its parameters' names left out: two routes of one
// shape conflict (/users/{id} and /users/{name} are both /users/{}).
func Shape(route string) string {
	if !IsPattern(route) {
		return route
	}
	segs, err := parsePattern(route)
	if err != nil {
		return route
	}
	var b strings.Builder
	for _, s := range segs {
		b.WriteByte('/')
		switch s.kind {
		case segLiteral:
			b.WriteString(s.lit)
		case segParam:
			b.WriteString("{}")
		case segWildcard:
			b.WriteByte('*')
		}
	}
	return b.String()
}

// compare orders patterns most specific first.
func (p *pattern[T]) compare(q *pattern[T]) int {
	for i := 0; ; i++ {
		a, b := p.seg(i), q.seg(i)
		if a.kind != b.kind {
			return int(a.kind) - int(b.kind)
		}
		if a.kind == segEnd || a.kind == segWildcard {
			return 0
		}
		if a.kind == segLiteral && a.lit != b.lit {
			return strings.Compare(a.lit, b.lit)
		}
	}
}

func (p *pattern[T]) seg(i int) segment {
	if i < len(p.segs) {
		return p.segs[i]
	}
	return segment{kind: segEnd}
}

// ErrConflict is returned by Add for a route of the same shape as one
// added before.
type ErrConflict struct{ Route, Other string }

func (e *ErrConflict) Error() string {
	if e.Route == e.Other {
		return e.Route + " is already a route"
	}
	return e.Route + " is the same route as " + e.Other
}

// Add adds route, to be looked up as v. It refuses a route that is not
// valid and one of the same shape as a route added before (*ErrConflict).
func (t *Table[T]) Add(route string, v T) error {
	if t.exact == nil {
		t.exact, t.shapes = map[string]T{}, map[string]string{}
	}
	shape := Shape(route)
	if other, ok := t.shapes[shape]; ok {
		return &ErrConflict{Route: route, Other: other}
	}
	if !IsPattern(route) {
		t.shapes[shape] = route
		t.exact[route] = v
		return nil
	}
	segs, err := parsePattern(route)
	if err != nil {
		return err
	}
	t.shapes[shape] = route
	p := &pattern[T]{route: route, segs: segs, v: v}
	i, _ := slices.BinarySearchFunc(t.patterns, p, (*pattern[T]).compare)
	t.patterns = slices.Insert(t.patterns, i, p)
	return nil
}

// Len returns the number of routes.
func (t *Table[T]) Len() int { return len(t.exact) + len(t.patterns) }

// Each calls fn with every route's value.
func (t *Table[T]) Each(fn func(v T)) {
	for _, p := range t.patterns {
		fn(p.v)
	}
	for _, v := range t.exact {
		fn(v)
	}
}

// Lookup returns the value of the route that serves path, and fills ps
// with the parameters it matched; ok is false when no route does. It
// allocates nothing.
func (t *Table[T]) Lookup(path []byte, ps *Params) (v T, ok bool) {
	ps.N = 0
	if v, ok := t.exact[string(path)]; ok {
		return v, true
	}
	if len(path) > 0xffff {
		return v, false
	}
	for _, p := range t.patterns {
		if p.match(path, ps) {
			return p.v, true
		}
	}
	ps.N = 0
	return v, false
}

// match reports whether path matches p, filling ps.
func (p *pattern[T]) match(path []byte, ps *Params) bool {
	ps.N = 0
	i := 1 // path[0] is '/'
	if len(path) == 0 || path[0] != '/' {
		return false
	}
	for k, s := range p.segs {
		if s.kind == segWildcard {
			// The rest of the path from the slash before it ("/a/b";
			// "/" for "/static/"), empty for "/static" itself, which
			// "/static/*" matches too.
			start := min(i-1, len(path))
			ps.Names[ps.N], ps.Vals[ps.N] = "*", Span{uint16(start), uint16(len(path) - start)}
			ps.N++
			return true
		}
		if i > len(path) {
			return false
		}
		end := i
		for end < len(path) && path[end] != '/' {
			end++
		}
		seg := path[i:end]
		switch s.kind {
		case segLiteral:
			if string(seg) != s.lit {
				return false
			}
		case segParam:
			if len(seg) == 0 {
				return false
			}
			ps.Names[ps.N], ps.Vals[ps.N] = s.lit, Span{uint16(i), uint16(len(seg))}
			ps.N++
		}
		last := k == len(p.segs)-1
		switch {
		case end == len(path):
			i = end + 1 // past the end: only a wildcard may follow
			if last {
				return true
			}
		case last:
			return false // more path than pattern
		default:
			i = end + 1
		}
	}
	return false
}
