package bench

import (
	"math"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Environment the benchmark's functions read (names may not start with
// SPRY_: spry.yaml reserves those).
const (
	EnvWorkRate = "BENCH_WORK_RATE" // work units per microsecond (Calibrate)
	EnvStepCPU  = "BENCH_STEP_CPU"  // extra CPU per step, e.g. 50us
	EnvScale    = "BENCH_SCALE"     // multiplies motion's and parking's costs
)

// Settings are the knobs the functions read from their environment.
type Settings struct {
	WorkRate float64       // work units per µs; 0 calibrates on first use
	StepCPU  time.Duration // extra CPU per step (boutique and chain)
	Scale    float64       // multiplies the built-in costs (motion, parking); 0 means 1
}

// Env returns s as environment variables for a function process.
func (s Settings) Env() map[string]string {
	m := map[string]string{}
	if s.WorkRate > 0 {
		m[EnvWorkRate] = strconv.FormatFloat(s.WorkRate, 'g', -1, 64)
	}
	if s.StepCPU > 0 {
		m[EnvStepCPU] = s.StepCPU.String()
	}
	if s.Scale > 0 {
		m[EnvScale] = strconv.FormatFloat(s.Scale, 'g', -1, 64)
	}
	return m
}

var (
	setOnce  sync.Once
	settings Settings
)

// Configure sets the settings of this process's functions (instead of
// reading them from the environment). Call it before any handler runs.
func Configure(s Settings) {
	setOnce.Do(func() {})
	if s.Scale <= 0 {
		s.Scale = 1
	}
	if s.WorkRate <= 0 {
		s.WorkRate = Calibrate()
	}
	settings = s
}

// current returns the settings, read from the environment at first use.
func current() *Settings {
	setOnce.Do(func() {
		s := Settings{Scale: 1}
		if v, err := strconv.ParseFloat(os.Getenv(EnvWorkRate), 64); err == nil && v > 0 {
			s.WorkRate = v
		}
		if v, err := time.ParseDuration(os.Getenv(EnvStepCPU)); err == nil && v > 0 {
			s.StepCPU = v
		}
		if v, err := strconv.ParseFloat(os.Getenv(EnvScale), 64); err == nil && v > 0 {
			s.Scale = v
		}
		if s.WorkRate == 0 {
			s.WorkRate = Calibrate()
		}
		settings = s
	})
	return &settings
}

// sink keeps the compiler from removing the work.
var sink atomic.Uint64

// chunk is how many mixing rounds one unit of work is.
const chunk = 64

// work runs n units of the mixing loop.
func work(n int64) uint64 {
	x := uint64(0x9e3779b97f4a7c15)
	var st [8]uint64
	for i := int64(0); i < n; i++ {
		for j := range chunk {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			st[j&7] += x
		}
	}
	return x ^ st[0] ^ st[3] ^ st[7]
}

// Work burns d of CPU (as calibrated) doing real computation.
func Work(d time.Duration) {
	if d <= 0 {
		return
	}
	units := int64(math.Round(current().WorkRate * float64(d) / float64(time.Microsecond)))
	sink.Add(work(max(units, 1)))
}

// Calibrate measures how many work units this machine runs per
// microsecond of CPU: the best of a few short runs, timed by the thread's
// own CPU clock, so that time the thread spent preempted by other load
// does not make every later step shorter than asked.
func Calibrate() float64 {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	best := 0.0
	for range 5 {
		n := int64(1000)
		for {
			t := ThreadCPU()
			sink.Add(work(n))
			el := ThreadCPU() - t
			if el > 10*time.Millisecond {
				best = max(best, float64(n)/(float64(el)/float64(time.Microsecond)))
				break
			}
			n *= 2
		}
	}
	return best
}
