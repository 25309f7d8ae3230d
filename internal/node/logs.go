package node

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Each function keeps the last lines its instances printed (stdout and
// stderr, as the node's own output shows them), for `spry logs`:
//
//	GET /v1/logs?function=NAME[&app=APP][&tail=N][&follow=1]
//
// answers JSON lines (one logLine each), oldest first; with follow=1 it
// goes on streaming new lines until the client goes away.

// logKeep is how many lines a function's log keeps.
const logKeep = 2000

// logLine is one line an instance printed.
type logLine struct {
	Time     time.Time `json:"time"`
	App      string    `json:"app"`
	Function string    `json:"function"`
	Instance uint16    `json:"instance"`
	Text     string    `json:"text"`
}

// logBook is one function's recent output and its followers.
type logBook struct {
	app, fn string

	mu    sync.Mutex
	lines []logLine // a ring of logKeep once full
	next  int       // where the next line goes once full
	subs  map[chan logLine]struct{}
}

func newLogBook(app, fn string) *logBook {
	return &logBook{app: app, fn: fn, subs: map[chan logLine]struct{}{}}
}

func (b *logBook) add(l logLine) {
	l.App, l.Function = b.app, b.fn
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.lines) < logKeep {
		b.lines = append(b.lines, l)
	} else {
		b.lines[b.next] = l
		b.next = (b.next + 1) % logKeep
	}
	for ch := range b.subs {
		select {
		case ch <- l:
		default: // a follower that cannot keep up misses lines, the instance never waits
		}
	}
}

// recent returns up to n of the last lines, oldest first, and, when follow,
// a channel of the lines after them (cancel with the returned func).
func (b *logBook) recent(n int, follow bool) ([]logLine, chan logLine, func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	all := append(append([]logLine(nil), b.lines[b.next:]...), b.lines[:b.next]...)
	if n >= 0 && n < len(all) {
		all = all[len(all)-n:]
	}
	if !follow {
		return all, nil, func() {}
	}
	ch := make(chan logLine, 256)
	b.subs[ch] = struct{}{}
	return all, ch, func() {
		b.mu.Lock()
		delete(b.subs, ch)
		b.mu.Unlock()
	}
}

// output returns the writer for the output of instance id of app's
// function fn.
func (n *Node) output(app, fn string, id uint16) *lineWriter {
	return &lineWriter{mu: &n.outMu, out: n.cfg.Output, prefix: fmt.Appendf(nil, "[%s/%s#%d] ", app, fn, id),
		book: n.logBook(app, fn), id: id}
}

// logBook returns the log of app's function fn, made on first use.
func (n *Node) logBook(app, fn string) *logBook {
	n.logsMu.Lock()
	defer n.logsMu.Unlock()
	if n.logs == nil {
		n.logs = map[[2]string]*logBook{}
	}
	b := n.logs[[2]string{app, fn}]
	if b == nil {
		b = newLogBook(app, fn)
		n.logs[[2]string{app, fn}] = b
	}
	return b
}

// serveLogs is GET /v1/logs.
func (n *Node) serveLogs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	fn, app := q.Get("function"), q.Get("app")
	if fn == "" {
		http.Error(w, `{"error":"want ?function=NAME"}`, http.StatusBadRequest)
		return
	}
	var matches []string
	for _, a := range n.apps {
		if app != "" && a.cfg.Name != app {
			continue
		}
		if a.cfg.Function(fn) != nil {
			matches = append(matches, a.cfg.Name)
		}
	}
	switch {
	case len(matches) == 0:
		http.Error(w, fmt.Sprintf(`{"error":%q}`, n.noFunction(app, fn)), http.StatusNotFound)
		return
	case len(matches) > 1:
		http.Error(w, fmt.Sprintf(`{"error":"function %s is in several apps (%v): add ?app=APP"}`, fn, matches), http.StatusConflict)
		return
	}
	tail := 100
	if s := q.Get("tail"); s != "" {
		t, err := strconv.Atoi(s)
		if err != nil {
			http.Error(w, `{"error":"tail: want a number of lines (-1: all)"}`, http.StatusBadRequest)
			return
		}
		tail = t
	}
	follow := q.Get("follow") == "1" || q.Get("follow") == "true"
	lines, ch, cancel := n.logBook(matches[0], fn).recent(tail, follow)
	defer cancel()
	w.Header().Set("Content-Type", "application/x-ndjson")
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	for _, l := range lines {
		enc.Encode(l)
	}
	bw.Flush()
	if !follow {
		return
	}
	fl, _ := w.(http.Flusher)
	if fl != nil {
		fl.Flush()
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case l := <-ch:
			enc.Encode(l)
			// Whatever else is queued goes in the same write.
			for more := true; more; {
				select {
				case l = <-ch:
					enc.Encode(l)
				default:
					more = false
				}
			}
			bw.Flush()
			if fl != nil {
				fl.Flush()
			}
		}
	}
}

// noFunction says that no app (or not app) has function fn.
func (n *Node) noFunction(app, fn string) string {
	var names []string
	for _, a := range n.apps {
		if app != "" && a.cfg.Name != app {
			continue
		}
		for _, f := range a.cfg.Functions {
			names = append(names, f.Name)
		}
	}
	where := "this node"
	if app != "" {
		where = "app " + app
	}
	return fmt.Sprintf("no function %s in %s (functions: %v)", fn, where, names)
}
