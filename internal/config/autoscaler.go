package config

import (
	"time"

	"github.com/spry-dev/spry/internal/control"
)

// Autoscaler returns the config of function f's autoscaler (control.New),
// deciding every tick; coldStart is the time an instance of f takes from
// start to ready. A node and the cluster controller build it alike.
func (f *Function) Autoscaler(tick, coldStart time.Duration) control.Config {
	sc := f.Scale
	cfg := control.Config{Policy: sc.Policy, MinInstances: sc.Min, MaxInstances: sc.Max,
		Concurrency: f.Concurrency, SLO: sc.SLO, Tick: tick}
	if sc.Policy == PolicyFixed {
		cfg.Fixed.Instances = f.Instances
		cfg.SLO = 0
	}
	cfg.Mu.ColdStart = coldStart
	cfg.Mu.StabilizationWindow, cfg.Mu.IdlePeriod, cfg.Mu.SLOWindow = sc.Window, sc.Idle, sc.SLOWindow
	cfg.Mu.Attainment = sc.Attainment
	cfg.KPA.StableWindow, cfg.KPA.ScaleToZeroGrace = sc.Window, sc.Idle
	return cfg
}
