package bench

import (
	"bytes"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/spry-dev/spry/sdk"
)

func TestMain(m *testing.M) {
	Configure(Settings{WorkRate: 1, Scale: 0.001})
	m.Run()
}

// Every request of every workload runs through its chain and gets a
// plausible answer.
func TestWorkloadsAnswer(t *testing.T) {
	cases := []struct {
		name string
		o    Options
		want map[string][]string // chain → substrings of the answer
	}{
		{"boutique", Options{}, map[string][]string{
			"home":        {"<h1>Hot products</h1>", "Sunglasses", "cart ("},
			"product":     {"You may also like"},
			"viewcart":    {"Your cart", "total "},
			"addcart":     {"added; cart is now"},
			"setcurrency": {"currency set to"},
			"checkout":    {"Your order is complete!", "tracking", "paid ", "digest"},
		}},
		{"motion", Options{}, map[string][]string{"motion": {`"light":"on"`}}},
		{"parking", Options{}, map[string][]string{"parking": {`"charge_cents":`, `"plate":"`}}},
		{"chain", Options{Steps: 3, Payload: 100}, map[string][]string{"chain": {"00000003"}}},
		{"hello", Options{}, map[string][]string{"hello": {`"hops":3,"hop_us":[`}}},
		{"fanout", Options{Branches: 3, Payload: 1000}, map[string][]string{"fanout": {"b01 ", "\nb02 ", "\nb03 "}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w, err := New(tc.name, tc.o)
			if err != nil {
				t.Fatal(err)
			}
			r, err := sdk.NewRunner(sdk.RunnerOptions{BufferSize: w.BufferSize, Calls: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			seen := map[string]bool{}
			for i := range w.Requests {
				req := &w.Requests[i]
				rep, err := w.RunLocal(r, req)
				if err != nil {
					t.Fatal(err)
				}
				if rep.Status != 200 {
					t.Fatalf("%s %s: status %d: %s", req.Method, req.Target, rep.Status, rep.Body)
				}
				for _, s := range tc.want[req.Chain] {
					if !bytes.Contains(rep.Body, []byte(s)) {
						t.Errorf("%s %s: answer lacks %q:\n%s", req.Method, req.Target, s, rep.Body)
					}
				}
				// Deterministic: the same request, the same answer.
				again, _ := w.RunLocal(r, req)
				a, _ := w.Stable(again.Body)
				b, ok := w.Stable(rep.Body)
				if !ok || !bytes.Equal(a, b) {
					t.Errorf("%s %s: two answers differ", req.Method, req.Target)
				}
				seen[req.Chain] = true
			}
			for c := range tc.want {
				if !seen[c] {
					t.Errorf("no request for chain %s", c)
				}
			}
		})
	}
}

// The fan-out's line of steps answers what its graph does.
func TestFanoutSeqAnswersTheSame(t *testing.T) {
	w, err := New("fanout", Options{Branches: 8, Payload: 4096})
	if err != nil {
		t.Fatal(err)
	}
	fns, chains, err := w.Shaped("seq")
	if err != nil {
		t.Fatal(err)
	}
	seq := *w
	seq.Functions, seq.Chains = fns, chains
	r, _ := sdk.NewRunner(sdk.RunnerOptions{BufferSize: w.BufferSize, Calls: 1})
	defer r.Close()
	for i := range w.Requests {
		want, err := w.RunLocal(r, &w.Requests[i])
		if err != nil || want.Status != 200 || len(want.Body) != 8*16 {
			t.Fatalf("graph: %v %d %q", err, want.Status, want.Body)
		}
		got, err := seq.RunLocal(r, &w.Requests[i])
		if err != nil || got.Status != 200 || !bytes.Equal(got.Body, want.Body) {
			t.Fatalf("line: %v %d %q, want %q", err, got.Status, got.Body, want.Body)
		}
	}
	if _, _, err := w.Shaped("nope"); err == nil || !strings.Contains(err.Error(), "seq") {
		t.Errorf("unknown variant: %v", err)
	}
	for _, o := range []Options{{Branches: 1}, {Branches: 17}, {Branches: 8, Payload: 100}} {
		if _, err := New("fanout", o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}

func TestBoutiqueErrors(t *testing.T) {
	w, _ := New("boutique", Options{})
	r, _ := sdk.NewRunner(sdk.RunnerOptions{BufferSize: w.BufferSize})
	defer r.Close()
	bad := []Request{
		{Chain: "product", Method: "GET", Target: "/product?id=NOPE", Header: [][2]string{{"X-Session", "x"}}},
		{Chain: "setcurrency", Method: "POST", Target: "/setCurrency", Header: [][2]string{{"X-Session", "x"}}, Body: []byte("currency_code=XXX")},
		{Chain: "checkout", Method: "POST", Target: "/cart/checkout", Header: [][2]string{{"X-Session", "x"}, {"X-Cart", "OLJCESPC7Z:1"}},
			Body: []byte("email=a@b&street_address=1&zip_code=2&city=c&country=d&credit_card_number=4111111111111112&credit_card_expiration_year=2030&credit_card_expiration_month=1")},
	}
	for _, req := range bad {
		rep, err := w.RunLocal(r, &req)
		if err != nil || rep.Status < 400 {
			t.Errorf("%s %s: got %d %q, want an error", req.Method, req.Target, rep.Status, rep.Body)
		}
	}
}

func TestChainLimits(t *testing.T) {
	for _, o := range []Options{{Steps: 11}, {Payload: 10}, {Payload: 256<<20 + 1}} {
		if _, err := New("chain", o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
	if _, err := New("boutique", Options{Chains: []string{"nope"}}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("unknown chain: %v", err)
	}
}

// Calibrated work takes the CPU time it was calibrated for (it is not
// optimized away, and the rate is units per microsecond, not per
// nanosecond). Thread CPU time is the measure, but not an exact one on a
// shared machine: without IRQ time accounting (this kernel has none) the
// interrupts a thread happens to run under are charged to it, and a
// sibling hyperthread's load changes how fast it runs; a calibration under
// one and the work under the other can differ by more than the factor of
// two allowed. So a few tries, each calibrated afresh: noise passes one
// of them, while work that is elided, or a rate off by a scale, fails
// them all.
func TestWorkTakesTime(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var tries []string
	for range 5 {
		rate := Calibrate()
		if rate <= 0 {
			t.Fatalf("rate %v", rate)
		}
		start := ThreadCPU()
		sink.Add(work(int64(rate * 2000)))
		el := ThreadCPU() - start
		if el >= time.Millisecond {
			return
		}
		tries = append(tries, fmt.Sprintf("%v (at %.1f units/µs)", el, rate))
	}
	t.Errorf("2 ms of work took %s of CPU", strings.Join(tries, ", "))
}
