package node

import (
	"bytes"
	"io"
	"sync"
)

// lineWriter copies an instance's output to the node's, one whole line at
// a time with a prefix naming the instance, so lines of several instances
// never interleave mid-line. Lines longer than maxLine are cut.
type lineWriter struct {
	mu     *sync.Mutex // shared by every writer to out
	out    io.Writer
	prefix []byte
	buf    []byte
}

const maxLine = 16 << 10

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
	w.buf = w.buf[:0]
}
