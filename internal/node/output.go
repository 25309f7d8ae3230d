package node

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// lineWriter copies an instance's output to the node's, one whole line at
// a time with a prefix naming the instance, so lines of several instances
// never interleave mid-line; and to its function's log (spry logs). Lines
// longer than maxLine are cut.
type lineWriter struct {
	mu     *sync.Mutex // shared by every writer to out
	out    io.Writer
	prefix []byte
	book   *logBook // the function's log; nil: none
	id     uint16
	buf    []byte

	lmu  sync.Mutex
	tail [lastLines]string // the last lines, oldest first once full
	n    int
}

const (
	maxLine   = 16 << 10
	lastLines = 4 // kept for the error of an instance that failed to start
)

func (w *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.buf = append(w.buf, p...)
			if len(w.buf) >= maxLine {
				w.flush()
			}
			break
		}
		w.buf = append(w.buf, p[:i]...)
		p = p[i+1:]
		w.flush()
	}
	return n, nil
}

func (w *lineWriter) flush() {
	if len(w.buf) == 0 {
		return
	}
	w.mu.Lock()
	w.out.Write(append(append(append([]byte(nil), w.prefix...), w.buf...), '\n'))
	w.mu.Unlock()
	line := string(w.buf)
	w.lmu.Lock()
	w.tail[w.n%lastLines] = line
	w.n++
	w.lmu.Unlock()
	if w.book != nil {
		w.book.add(logLine{Time: time.Now(), Instance: w.id, Text: line})
	}
	w.buf = w.buf[:0]
}

// lastWords returns the instance's last lines of output for an error
// message (": its last output:\n\t…"), or "" when it printed nothing.
func (w *lineWriter) lastWords() string {
	if w == nil {
		return ""
	}
	w.lmu.Lock()
	defer w.lmu.Unlock()
	if w.n == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("; its last output:")
	for i := max(0, w.n-lastLines); i < w.n; i++ {
		fmt.Fprintf(&b, "\n\t%s", strings.TrimRight(w.tail[i%lastLines], " \r"))
	}
	return b.String()
}
