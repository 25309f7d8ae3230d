package fl

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// checkFedAvg compares a model with the float64 reference of the updates
// folded into it.
func checkFedAvg(t *testing.T, what string, got []float32, updates [][]float32, samples []float64) {
	t.Helper()
	want, scale := Reference(updates, samples)
	for i := range want {
		if d := math.Abs(float64(got[i]) - want[i]); d > Tolerance(len(updates), scale[i]) {
			t.Fatalf("%s: parameter %d = %v, FedAvg reference %v (off by %g, tolerance %g)", what, i, got[i], want[i], d, Tolerance(len(updates), scale[i]))
		}
	}
}

// TestAggregatorFedAvg: over several rounds of random updates and sample
// counts, sent from many goroutines at once, the eager (several partial
// sums) and the wait-for-all aggregators both give FedAvg to float32
// tolerance.
func TestAggregatorFedAvg(t *testing.T) {
	for _, mode := range []string{Eager, WaitAll} {
		for _, params := range []int{1, 33, 5000} {
			t.Run(fmt.Sprintf("%s/%d", mode, params), func(t *testing.T) {
				t.Parallel()
				rng := rand.New(rand.NewPCG(uint64(params), 7))
				const clients, rounds = 23, 4
				var clock atomic.Int64
				a, err := NewAggregator(Job{ID: "j", Params: params, Updates: clients, Rounds: rounds}, mode, 3, nil, func() int64 { return clock.Add(1) })
				if err != nil {
					t.Fatal(err)
				}
				for r := 1; r <= rounds; r++ {
					updates := make([][]float32, clients)
					samples := make([]float64, clients)
					for c := range updates {
						updates[c] = make([]float32, params)
						for i := range updates[c] {
							updates[c][i] = float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(7)-3)))
						}
						samples[c] = float64(1 + rng.IntN(5000))
					}
					var wg sync.WaitGroup
					for c := range updates {
						wg.Add(1)
						go func() {
							defer wg.Done()
							if _, err := a.Update(fmt.Sprint("client-", c), r, samples[c], updates[c]); err != nil {
								t.Errorf("round %d client %d: %v", r, c, err)
							}
						}()
					}
					wg.Wait()
					m, n := a.Model()
					if n != r {
						t.Fatalf("after round %d the model is round %d's", r, n)
					}
					checkFedAvg(t, fmt.Sprintf("round %d", r), m, updates, samples)
				}
				if st := a.Status(); st.State != StateDone || len(st.Results) != rounds {
					t.Fatalf("status after the last round: %+v", st)
				}
				if _, err := a.Update("late", rounds+1, 1, make([]float32, params)); err == nil || err.Status != http.StatusGone {
					t.Fatalf("update after the job's last round: %v, want 410", err)
				}
			})
		}
	}
}

// TestAggregatorRefusals: a malformed update (wrong length, NaN) is
// refused with the reason and leaves the round's sum untouched, so the
// model is the FedAvg of the accepted updates only.
func TestAggregatorRefusals(t *testing.T) {
	var clock atomic.Int64
	a, _ := NewAggregator(Job{ID: "j", Params: 64, Updates: 2}, Eager, 1, nil, func() int64 { return clock.Add(1) })
	u1, u2 := randVec(64, 1), randVec(64, 2)
	if _, err := a.Update("a", 1, 10, u1); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Update("b", 1, 1, u1[:10]); err == nil || err.Status != http.StatusBadRequest {
		t.Fatalf("short update: %v", err)
	}
	bad := append([]float32(nil), u2...)
	bad[40] = float32(math.NaN())
	_, err := a.Update("b", 1, 3, bad)
	if err == nil || err.Status != http.StatusUnprocessableEntity || err.Msg != "parameter 40 is NaN: an update must hold finite numbers; it is refused" {
		t.Fatalf("NaN update: %v", err)
	}
	if _, err := a.Update("b", 1, 3, u2); err != nil { // corrected, same client
		t.Fatal(err)
	}
	m, n := a.Model()
	if n != 1 {
		t.Fatalf("model round %d", n)
	}
	checkFedAvg(t, "after a refused update", m, [][]float32{u1, u2}, []float64{10, 3})
}

// TestAggregatorDeadline: a round with a deadline closes at Tick once it
// passed, with the updates it has.
func TestAggregatorDeadline(t *testing.T) {
	var clock atomic.Int64
	a, _ := NewAggregator(Job{ID: "j", Params: 8, Deadline: Duration(time.Second)}, Eager, 2, nil, clock.Load)
	u := randVec(8, 3)
	a.Update("a", 1, 2, u)
	a.Tick()
	if _, n := a.Model(); n != 0 {
		t.Fatal("closed before the deadline")
	}
	if next := a.NextEvent(); next != int64(time.Second) {
		t.Fatalf("next event %d", next)
	}
	clock.Store(int64(time.Second))
	a.Tick()
	m, n := a.Model()
	if n != 1 {
		t.Fatal("not closed at the deadline")
	}
	checkFedAvg(t, "deadline round", m, [][]float32{u}, []float64{2})
	if st := a.Status(); st.Round != 2 || st.State != StateOpen {
		t.Fatalf("status %+v", st)
	}
}
