package bench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Media and codecs a transfer can use.
const (
	MediumTCP  = "tcp"       // a loopback TCP connection through the kernel's network stack
	MediumCall = "wasm-call" // a call inside a sandbox host: the payload copied into the guest and out
	// Spry's descriptor transfers are "descriptor/<transport>".

	CodecHTTP = "http/1.1"
	CodecGRPC = "grpc" // protobuf over HTTP/2
	CodecNone = "none" // a 16-byte descriptor; the payload stays in the pool
)

// Transfer is one movement of a request (or of its answer) from one
// component to the next, as a mode is built. The audit derives the
// by-design overheads from it.
type Transfer struct {
	From, To string
	Medium   string
	Codec    string
	Answer   bool // on the way back
}

// Design is what a transfer costs by construction.
type Design struct {
	Copies, Proto, Ser, Deser int
}

// Design derives the by-design costs of t:
//
//   - copies of the payload: through a socket, the sender's copy into the
//     kernel and the receiver's copy out of it (the client's own copy is not
//     the platform's); gRPC adds the protobuf encoding of the body into a
//     message and the decoding out of it into the handler's buffer. A
//     descriptor moves no payload.
//   - protocol processing: a pass through the kernel's TCP/IP stack (and
//     the HTTP or HTTP/2 framing on top); none for a descriptor.
//   - (de)serialization: the sender encodes an HTTP message or a protobuf,
//     the receiver parses it; the client's side is not counted.
func (t Transfer) Design() Design {
	var d Design
	if t.Medium != MediumTCP {
		return d
	}
	d.Proto = 1
	if t.From != "client" {
		d.Copies++
		d.Ser++
	}
	if t.To != "client" {
		d.Copies++
		d.Deser++
	}
	if t.Codec == CodecGRPC {
		if t.From != "client" {
			d.Copies++
		}
		if t.To != "client" {
			d.Copies++
		}
	}
	return d
}

// Measured is what the processes of one component spent per request.
type Measured struct {
	CtxSw, Syscalls float64
	OK              bool
}

// AuditRow is one transfer of the audit table.
type AuditRow struct {
	N        int      `json:"n"`
	From     string   `json:"from"`
	To       string   `json:"to"`
	Via      string   `json:"via"`
	Answer   bool     `json:"answer"`
	Copies   int      `json:"copies"`
	Proto    int      `json:"proto"`
	Ser      int      `json:"ser"`
	Deser    int      `json:"deser"`
	CtxSw    *float64 `json:"ctxsw,omitempty"`    // measured at the receiving component
	Syscalls *float64 `json:"syscalls,omitempty"` // measured at the receiving component
}

// Audit is the SPRIGHT-style overhead table of one chain in one mode.
type Audit struct {
	Mode   string     `json:"mode"`
	Chain  string     `json:"chain"`
	Rows   []AuditRow `json:"rows"`
	Totals AuditRow   `json:"totals"`
	// Measured totals per request over every process under test.
	CtxSwPerReq    float64 `json:"ctxsw_per_req"`
	SyscallsPerReq float64 `json:"syscalls_per_req"`
}

// BuildAudit makes the table for path. perComp holds each component's
// measured cost per request; arrivals how many transfers reach each
// component per request (over the request mix), by which it is divided.
func BuildAudit(mode, chain string, path []Transfer, perComp map[string]Measured, arrivals map[string]float64, total Measured) Audit {
	a := Audit{Mode: mode, Chain: chain, CtxSwPerReq: total.CtxSw, SyscallsPerReq: total.Syscalls}
	var tc, ts float64
	anyMeasured := false
	for i, t := range path {
		d := t.Design()
		r := AuditRow{N: i + 1, From: t.From, To: t.To, Via: t.Medium + " " + t.Codec, Answer: t.Answer,
			Copies: d.Copies, Proto: d.Proto, Ser: d.Ser, Deser: d.Deser}
		if m, ok := perComp[t.To]; ok && m.OK && arrivals[t.To] > 0 {
			c, s := m.CtxSw/arrivals[t.To], m.Syscalls/arrivals[t.To]
			r.CtxSw, r.Syscalls = &c, &s
			tc += c
			ts += s
			anyMeasured = true
		}
		a.Totals.Copies += d.Copies
		a.Totals.Proto += d.Proto
		a.Totals.Ser += d.Ser
		a.Totals.Deser += d.Deser
		a.Rows = append(a.Rows, r)
	}
	if anyMeasured {
		a.Totals.CtxSw, a.Totals.Syscalls = &total.CtxSw, &total.Syscalls
	}
	return a
}

// Arrivals counts the transfers that reach each component per request of
// a mix of chains (weights: requests of each chain per request).
func Arrivals(paths map[string][]Transfer, weights map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for chain, p := range paths {
		for _, t := range p {
			out[t.To] += weights[chain]
		}
	}
	return out
}

// Markdown writes the audit as a table with one column per transfer, the
// way SPRIGHT presents it.
func (a Audit) Markdown(w io.Writer) {
	fmt.Fprintf(w, "Mode `%s`, chain `%s`:\n\n", a.Mode, a.Chain)
	head := []string{"transfer"}
	sep := []string{"---"}
	for _, r := range a.Rows {
		dir := "→"
		if r.Answer {
			dir = "⇢"
		}
		head = append(head, fmt.Sprintf("%d %s%s%s", r.N, short(r.From), dir, short(r.To)))
		sep = append(sep, "---:")
	}
	head = append(head, "total")
	sep = append(sep, "---:")
	fmt.Fprintf(w, "| %s |\n| %s |\n", strings.Join(head, " | "), strings.Join(sep, " | "))
	row := func(name string, f func(r AuditRow) string) {
		cells := []string{name}
		for _, r := range a.Rows {
			cells = append(cells, f(r))
		}
		cells = append(cells, f(a.Totals))
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
	row("via", func(r AuditRow) string { return r.Via })
	row("copies (design)", func(r AuditRow) string { return fmt.Sprint(r.Copies) })
	row("protocol processing (design)", func(r AuditRow) string { return fmt.Sprint(r.Proto) })
	row("serializations (design)", func(r AuditRow) string { return fmt.Sprint(r.Ser) })
	row("deserializations (design)", func(r AuditRow) string { return fmt.Sprint(r.Deser) })
	row("context switches (measured)", func(r AuditRow) string { return opt(r.CtxSw) })
	row("read/write syscalls (measured)", func(r AuditRow) string { return opt(r.Syscalls) })
	fmt.Fprintln(w)
}

// Text writes the audit for a terminal: one line per transfer.
func (a Audit) Text(w io.Writer) {
	fmt.Fprintf(w, "mode %s, chain %s\n", a.Mode, a.Chain)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "#\tfrom\tto\tvia\tcopies\tproto\tser\tdeser\tctxsw/req\tsyscalls/req\t")
	for _, r := range a.Rows {
		to := r.To
		if r.Answer {
			to += " (answer)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t\n", r.N, r.From, to, r.Via, r.Copies, r.Proto, r.Ser, r.Deser, opt(r.CtxSw), opt(r.Syscalls))
	}
	t := a.Totals
	fmt.Fprintf(tw, "\ttotal\t\t\t%d\t%d\t%d\t%d\t%s\t%s\t\n", t.Copies, t.Proto, t.Ser, t.Deser, opt(t.CtxSw), opt(t.Syscalls))
	tw.Flush()
	fmt.Fprintln(w, "design columns follow from the mode's transfers; ctxsw and syscalls are measured at the receiving")
	fmt.Fprintln(w, "component (/proc, per request, split over the transfers it receives); syscalls are read/write-class only.")
}

func opt(v *float64) string {
	if v == nil {
		return "–"
	}
	return fmt.Sprintf("%.2f", *v)
}

func short(c string) string {
	c = strings.TrimPrefix(c, "fn:")
	c = strings.Replace(c, "sidecar:", "sc:", 1)
	return c
}
