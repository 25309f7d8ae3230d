package bench

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spry-dev/spry/internal/bench/proc"
	"github.com/spry-dev/spry/internal/fl"
)

// TestFLBench runs `spry bench fl` small: every mode, stragglers, and
// checks that report.json has the fields, that every model was
// FedAvg of its round's updates (errors 0) and that the stragglers were
// refused, not folded.
func TestFLBench(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := RunFL(ctx, FLOptions{Clients: 6, Params: 4099, Rounds: 2, Pattern: "stragglers:0.2", Concurrency: 4,
		Modes: FLModes, Idle: 200 * time.Millisecond, Exe: spryBin})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Modes) != len(FLModes) {
		t.Fatalf("%d modes in the report", len(rep.Modes))
	}
	for _, m := range rep.Modes {
		if m.Errors != 0 {
			t.Errorf("%s: %d errors, first: %s", m.Mode, m.Errors, m.FirstError)
		}
		if m.Refused != 4 { // ⌈0.2 × 6⌉ stragglers a round
			t.Errorf("%s: %d stragglers refused, want 4", m.Mode, m.Refused)
		}
		if m.RoundP50 <= 0 || m.AggregateP50 < 0 || m.AggregateP50 > m.RoundP50 || m.CPUPerRound <= 0 || m.PeakRSS <= 0 {
			t.Errorf("%s: implausible measurements %+v", m.Mode, m)
		}
	}
	dir := t.TempDir()
	if err := rep.Write(dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	json.Unmarshal(b, &raw)
	for _, k := range []string{"clients", "params", "rounds", "modes"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("report.json has no %q", k)
		}
	}
	for _, m := range raw["modes"].([]any) {
		for _, k := range []string{"mode", "round_s_p50", "aggregate_s_p50", "cpu_s_per_round", "peak_rss_bytes", "errors"} {
			if _, ok := m.(map[string]any)[k]; !ok {
				t.Errorf("report.json modes[] has no %q", k)
			}
		}
	}
	for _, p := range []string{"report.md", "fl-round.png", "fl-cpu.png"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Error(err)
		}
	}
	if left := children(t); len(left) > 0 {
		t.Fatalf("processes left: %v", left)
	}
}

// TestFLBaselinesRefuse: the baselines run the same round rules as Spry's
// app, so they refuse alike: wrong length, NaN, a duplicate, a straggler,
// a round not open yet.
func TestFLBaselinesRefuse(t *testing.T) {
	for _, mode := range []string{FLModeServerful, FLModeKnative} {
		t.Run(mode, func(t *testing.T) {
			o := FLOptions{Exe: spryBin, Leaves: 2}
			var sys flSystem
			var err error
			if mode == FLModeServerful {
				sys, err = startServerful(o, t.TempDir())
			} else {
				sys, err = startKnativeFL(o, t.TempDir())
			}
			if err != nil {
				t.Fatal(err)
			}
			defer sys.stop()
			c := sys.client()
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := c.Create(ctx, fl.Job{ID: "r", Params: 8, Updates: 2}); err != nil {
				t.Fatal(err)
			}
			u := fl.Bytes([]float32{1, 2, 3, 4, 5, 6, 7, 8})
			nan := slices.Clone(u)
			copy(nan[4:], fl.Bytes([]float32{float32(math.NaN())}))
			for _, s := range []struct {
				name   string
				round  int
				client string
				body   []byte
				status int
				msg    string
			}{
				{"short", 1, "a", u[:12], http.StatusBadRequest, "12 bytes"},
				{"nan", 1, "a", nan, http.StatusUnprocessableEntity, "parameter 1 is NaN"},
				{"ok", 1, "a", u, http.StatusOK, ""},
				{"duplicate", 1, "a", u, http.StatusConflict, "already sent"},
				{"future", 2, "b", u, http.StatusConflict, "not open"},
				{"ok", 1, "b", u, http.StatusOK, ""},
				{"straggler", 1, "c", u, http.StatusGone, "round 1 is closed"},
			} {
				st, msg, err := c.Update(ctx, "r", s.round, s.client, 3, s.body)
				if err != nil {
					t.Fatalf("%s: %v", s.name, err)
				}
				if mode == FLModeServerful && s.status == http.StatusUnprocessableEntity {
					s.status = http.StatusBadRequest // gRPC's INVALID_ARGUMENT
				}
				if st != s.status || !strings.Contains(msg, s.msg) {
					t.Errorf("%s: %d %q, want %d with %q", s.name, st, msg, s.status, s.msg)
				}
			}
			got, n, err := c.Model(ctx, "x", "r", 1, make([]byte, 32))
			if err != nil || got != 1 || n != 32 {
				t.Fatalf("model: round %d, %d bytes, %v", got, n, err)
			}
		})
	}
}

// A process that exits inside a measured window is charged the CPU it
// spent in the window, not its lifetime: its parent's reaped CPU grows by
// all of it (a leaf that scaled down in the idle window charged every fold
// it ever did to the window).
func TestCPUSinceExitedChild(t *testing.T) {
	burner := exec.Command("sh", "-c", "while :; do :; done")
	if err := burner.Start(); err != nil {
		t.Fatal(err)
	}
	defer burner.Process.Kill()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		u, err := proc.Read(burner.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		if u.CPUTick >= 300*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the burner ran %v in a minute", u.CPUTick)
		}
	}
	roots := []int{os.Getpid()}
	mark := markCPU(roots)
	lived := mark.snap.Procs[burner.Process.Pid].CPUTick
	burner.Process.Kill()
	burner.Wait()
	if d := cpuSince(roots, mark); d >= lived/2 {
		t.Errorf("the window was charged %v: the exited child's lifetime (%v), not its last moments", d, lived)
	}
}
