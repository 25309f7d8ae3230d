package bench

import (
	"fmt"
	"strconv"

	"github.com/spry-dev/spry/sdk"
)

// The fan-out workload: one payload to N branches at once and a join of
// their findings, as an image pipeline's detectors would (split → b1 … bN
// → merge), against the same work as a line of steps (the variant "seq":
// split → b1 → … → bN → merge) and against the baselines' parallel calls.
//
// The payload is "fanoutNN" (NN: the branches), N slots of 16 bytes, and
// the data. Branch k reads the data (a checksum seeded with k) and burns
// the configured CPU; its finding is a 16-byte line "bKK HHHHHHHHHHH\n".
// In the graph the branches share the payload (read-only) and write their
// line into an output of their own, and the join concatenates the lines in
// branch order; in the line a branch writes its line into its slot, in
// place, and the last step answers the slots. The answers are the same.

// Limits of the fan-out workload.
const (
	MaxBranches     = 16
	fanoutHeader    = 8
	fanoutLine      = 16
	defaultBranches = 8
)

func init() {
	fns := map[string]struct {
		doc string
		h   sdk.Handler
	}{
		"split":   {"bench (fanout): checks the payload and passes it on (to every branch)", fanoutSplit},
		"merge":   {"bench (fanout): joins the branches' findings, in branch order", fanoutMerge},
		"collect": {"bench (fanout, as a line): answers the findings the steps wrote into their slots", fanoutCollect},
	}
	for k := 1; k <= MaxBranches; k++ {
		fns["b"+strconv.Itoa(k)] = struct {
			doc string
			h   sdk.Handler
		}{fmt.Sprintf("bench (fanout): branch %d: a checksum of the data and BENCH_STEP_CPU; its finding in an output of its own", k), fanoutBranch(k, false)}
		fns["s"+strconv.Itoa(k)] = struct {
			doc string
			h   sdk.Handler
		}{fmt.Sprintf("bench (fanout, as a line): branch %d's work; its finding into its slot, in place", k), fanoutBranch(k, true)}
	}
	register("fanout-", fns)
}

// fanoutParts splits a payload into its slots and its data.
func fanoutParts(p []byte) (n int, slots, data []byte, err error) {
	if len(p) < fanoutHeader || string(p[:6]) != "fanout" {
		return 0, nil, nil, sdk.Errorf(400, "fanout: payload does not start with fanoutNN")
	}
	n, e := strconv.Atoi(string(p[6:8]))
	if e != nil || n < 1 || n > MaxBranches || len(p) < fanoutHeader+n*fanoutLine {
		return 0, nil, nil, sdk.Errorf(400, "fanout: payload header %q: want 01..%d branches and room for their slots", p[:8], MaxBranches)
	}
	return n, p[fanoutHeader : fanoutHeader+n*fanoutLine], p[fanoutHeader+n*fanoutLine:], nil
}

func fanoutSplit(req *sdk.Request, res *sdk.Response) error {
	_, _, _, err := fanoutParts(req.Payload())
	return err
}

// fanoutFinding is branch k's 16-byte line on data.
func fanoutFinding(k int, data []byte) [fanoutLine]byte {
	h := uint64(14695981039346656037) ^ uint64(k)
	for _, c := range data {
		h ^= uint64(c)
		h *= 1099511628211
	}
	var line [fanoutLine]byte
	copy(line[:], fmt.Sprintf("b%02d %011x\n", k, h&(1<<44-1)))
	return line
}

func fanoutBranch(k int, inPlace bool) sdk.Handler {
	return func(req *sdk.Request, res *sdk.Response) error {
		n, slots, data, err := fanoutParts(req.Payload())
		if err != nil {
			return err
		}
		if k > n {
			return sdk.Errorf(400, "fanout: branch %d of %d", k, n)
		}
		line := fanoutFinding(k, data)
		Work(current().StepCPU)
		if inPlace {
			copy(slots[(k-1)*fanoutLine:], line[:])
			return nil
		}
		_, err = res.Write(line[:])
		return err
	}
}

func fanoutMerge(req *sdk.Request, res *sdk.Response) error {
	if !req.IsJoin() {
		return nil // the findings, one after another already (a baseline's call)
	}
	for i := range req.NumInputs() {
		in := req.Input(i)
		if !in.Arrived() {
			if err := in.Err(); err != nil {
				return sdk.Errorf(502, "fanout: branch %d failed: %v", i+1, err)
			}
			return sdk.Errorf(502, "fanout: branch %d is missing", i+1)
		}
		if _, err := res.Write(in.Payload()); err != nil {
			return err
		}
	}
	return nil
}

func fanoutCollect(req *sdk.Request, res *sdk.Response) error {
	_, slots, _, err := fanoutParts(req.Payload())
	if err != nil {
		return err
	}
	buf := res.Buffer()
	n := copy(buf, slots) // the slots start 8 bytes in: moved to the front, in place
	res.SetLen(n)
	return nil
}

func fanout(o Options) (*Workload, error) {
	n, size := o.Branches, o.Payload
	if n == 0 {
		n = defaultBranches
	}
	if n < 2 || n > MaxBranches {
		return nil, fmt.Errorf("bench: fanout: --branches %d not in 2..%d", n, MaxBranches)
	}
	min := fanoutHeader + n*fanoutLine
	if size == 0 {
		size = 4 << 10
	}
	if size < min || size > MaxPayload {
		return nil, fmt.Errorf("bench: fanout: --payload %d not in %d..%d bytes for %d branches", size, min, MaxPayload, n)
	}
	w := &Workload{
		Name:       "fanout",
		Doc:        fmt.Sprintf("fan-out to %d branches and a join, %d-byte payload", n, size),
		BufferSize: size,
	}
	seq := Variant{Doc: fmt.Sprintf("the same work as a line of %d steps", n+2)}
	fan := Chain{Name: "fanout", Route: "/fanout", Methods: []string{"POST"}, Steps: []string{"split"}, Join: "merge"}
	line := Chain{Name: "fanout", Route: "/fanout", Methods: []string{"POST"}, Steps: []string{"split"}}
	w.Functions = append(w.Functions, Function{Name: "split", Builtin: "fanout-split"})
	seq.Functions = append(seq.Functions, Function{Name: "split", Builtin: "fanout-split"})
	for k := 1; k <= n; k++ {
		name := "b" + strconv.Itoa(k)
		w.Functions = append(w.Functions, Function{Name: name, Builtin: "fanout-b" + strconv.Itoa(k)})
		seq.Functions = append(seq.Functions, Function{Name: name, Builtin: "fanout-s" + strconv.Itoa(k)})
		fan.Branches = append(fan.Branches, name)
		line.Steps = append(line.Steps, name)
	}
	w.Functions = append(w.Functions, Function{Name: "merge", Builtin: "fanout-merge"})
	seq.Functions = append(seq.Functions, Function{Name: "merge", Builtin: "fanout-collect"})
	line.Steps = append(line.Steps, "merge")
	w.Chains, seq.Chains = []Chain{fan}, []Chain{line}
	w.Variants = map[string]Variant{"seq": seq}
	distinct := 4
	if size > 1<<20 {
		distinct = 1
	}
	for d := range distinct {
		body := make([]byte, size)
		copy(body, fmt.Sprintf("fanout%02d", n))
		for i := fanoutHeader; i < min; i++ {
			body[i] = ' '
		}
		for i := min; i < size; i++ {
			body[i] = byte('a' + (i*7+d*13)%26)
		}
		w.Requests = append(w.Requests, Request{Chain: "fanout", Method: "POST", Target: "/fanout", Body: body})
	}
	return w, nil
}
