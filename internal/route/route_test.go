package route

import (
	"errors"
	"strings"
	"testing"
)

func table(t testing.TB, routes ...string) *Table[string] {
	t.Helper()
	var tb Table[string]
	for _, r := range routes {
		if err := tb.Add(r, r); err != nil {
			t.Fatalf("Add(%s): %v", r, err)
		}
	}
	return &tb
}

func TestLookup(t *testing.T) {
	tb := table(t, "/hello", "/users/{id}", "/users/me", "/users/{id}/files/*", "/static/*", "/{any}/b", "/a/{x}", "/")
	for _, c := range []struct {
		path, route string
		params      string // name=value,…
	}{
		{"/hello", "/hello", ""},
		{"/", "/", ""},
		{"/users/42", "/users/{id}", "id=42"},
		{"/users/me", "/users/me", ""},                         // a literal beats a parameter
		{"/users/42/files", "/users/{id}/files/*", "id=42,*="}, // the wildcard takes nothing
		{"/users/42/files/", "/users/{id}/files/*", "id=42,*=/"},
		{"/users/42/files/a/b.txt", "/users/{id}/files/*", "id=42,*=/a/b.txt"},
		{"/static", "/static/*", "*="},
		{"/static/css/site.css", "/static/*", "*=/css/site.css"},
		{"/a/b", "/a/{x}", "x=b"}, // the literal first segment wins
		{"/z/b", "/{any}/b", "any=z"},
		{"/users/", "", ""}, // a parameter is never empty
		{"/users/42/x", "", ""},
		{"/hello/", "", ""},
		{"/nope", "", ""},
		{"", "", ""},
	} {
		var ps Params
		got, ok := tb.Lookup([]byte(c.path), &ps)
		if got != c.route || ok != (c.route != "") {
			t.Errorf("%q: route %q (%v), want %q", c.path, got, ok, c.route)
			continue
		}
		var kv []string
		for i := range ps.N {
			kv = append(kv, ps.Names[i]+"="+c.path[ps.Vals[i].Off:ps.Vals[i].Off+ps.Vals[i].N])
		}
		if ok && strings.Join(kv, ",") != c.params {
			t.Errorf("%q: params %q, want %q", c.path, strings.Join(kv, ","), c.params)
		}
	}
}

func TestConflictsAndErrors(t *testing.T) {
	var tb Table[int]
	for _, r := range []string{"/users/{id}", "/static/*", "/x"} {
		if err := tb.Add(r, 0); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct{ route, err string }{
		{"/users/{name}", "/users/{name} is the same route as /users/{id}"},
		{"/static/*", "/static/* is already a route"},
		{"/x", "/x is already a route"},
		{"/a/*/b", "* must be the last segment"},
		{"/a/{1x}", "{1x}: want a parameter name"},
		{"/a/{x}/{x}", "parameter {x} appears twice"},
		{"/a/b{x}", `segment "b{x}": a parameter is a whole segment`},
		{"/a/x*", `segment "x*"`},
		{"/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}", "9 parameters; want at most 8"},
	} {
		err := tb.Add(c.route, 0)
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("Add(%s): %v, want %q", c.route, err, c.err)
		}
	}
	var ce *ErrConflict
	if !errors.As(tb.Add("/users/{other}", 0), &ce) || ce.Other != "/users/{id}" {
		t.Errorf("conflict: %+v", ce)
	}
}

func TestLookupAllocatesNothing(t *testing.T) {
	tb := table(t, "/hello", "/users/{id}/files/*", "/users/{id}", "/static/*")
	var ps Params
	paths := [][]byte{[]byte("/hello"), []byte("/users/42"), []byte("/users/42/files/a"), []byte("/nope/x")}
	if n := testing.AllocsPerRun(1000, func() {
		for _, p := range paths {
			tb.Lookup(p, &ps)
		}
	}); n != 0 {
		t.Fatalf("%v allocations per lookup round", n)
	}
}

// Any path, however hostile, is looked up without a panic, and the spans
// it reports lie inside it.
func FuzzLookup(f *testing.F) {
	tb := table(f, "/hello", "/users/{id}", "/users/{id}/files/*", "/static/*", "/{a}/{b}")
	for _, s := range []string{"/", "/users/1/files/", "//", "/static", "", "/a//b", "/users/\x00/files"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		var ps Params
		_, ok := tb.Lookup([]byte(path), &ps)
		if !ok && ps.N != 0 {
			t.Fatalf("no route but %d params", ps.N)
		}
		for i := range ps.N {
			if v := ps.Vals[i]; int(v.Off)+int(v.N) > len(path) {
				t.Fatalf("param %s span %+v outside %q", ps.Names[i], v, path)
			}
		}
	})
}

func BenchmarkLookup(b *testing.B) {
	tb := table(b, "/hello", "/users/{id}", "/users/{id}/files/*", "/static/*", "/orders/{id}/items/{item}")
	for _, c := range []struct{ name, path string }{
		{"exact", "/hello"}, {"param", "/users/42"}, {"two-params", "/orders/7/items/9"}, {"wildcard", "/static/css/a.css"},
	} {
		b.Run(c.name, func(b *testing.B) {
			p := []byte(c.path)
			var ps Params
			b.ReportAllocs()
			for b.Loop() {
				tb.Lookup(p, &ps)
			}
		})
	}
}
