package trigger

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/spry-dev/spry/internal/activation"
	"github.com/spry-dev/spry/internal/config"
)

// timers fires cron: and every: triggers. A firing missed while the node
// was down is not replayed: schedules start from the node's start.
type timers struct {
	s       *Set
	cron    *cron.Cron
	entries map[*trig]cron.EntryID
	every   map[*trig]*everyTimer
	wg      sync.WaitGroup
	done    chan struct{}
}

type everyTimer struct {
	mu   sync.Mutex
	next time.Time
}

func startTimers(s *Set, ts []*trig) (*timers, error) {
	tm := &timers{
		s: s, entries: map[*trig]cron.EntryID{}, every: map[*trig]*everyTimer{}, done: make(chan struct{}),
		cron: cron.New(cron.WithLocation(time.UTC), cron.WithParser(cron.NewParser(
			cron.Minute|cron.Hour|cron.Dom|cron.Month|cron.Dow|cron.Descriptor))),
	}
	for _, t := range ts {
		switch t.def.Kind {
		case config.TriggerCron:
			spec := t.def.Cron
			if t.def.Timezone != "" {
				spec = "CRON_TZ=" + t.def.Timezone + " " + spec
			}
			id, err := tm.cron.AddFunc(spec, func() { tm.fire(t) })
			if err != nil {
				return nil, err
			}
			tm.entries[t] = id
		case config.TriggerEvery:
			e := &everyTimer{next: time.Now().Add(t.def.Every)}
			tm.every[t] = e
			tm.wg.Add(1)
			go tm.runEvery(t, e)
		}
	}
	tm.cron.Start()
	return tm, nil
}

func (tm *timers) runEvery(t *trig, e *everyTimer) {
	defer tm.wg.Done()
	tick := time.NewTicker(t.def.Every)
	defer tick.Stop()
	for {
		select {
		case now := <-tick.C:
			e.mu.Lock()
			e.next = now.Add(t.def.Every)
			e.mu.Unlock()
			tm.fire(t)
		case <-tm.done:
			return
		}
	}
}

// fire makes the activation of one firing, unless the trigger does not
// overlap and its last firing is still unfinished.
func (tm *timers) fire(t *trig) {
	if !t.def.Overlap {
		if p := t.lastID.Load(); p != nil && tm.s.target.Active(*p) {
			t.skipped.Add(1)
			return
		}
	}
	kind := activation.CauseCron
	spec := activation.Spec{Cause: activation.Cause{Kind: kind}, Body: []byte(t.def.Body)}
	if len(t.def.Body) > 0 {
		spec.Request.ContentType = "text/plain; charset=utf-8"
		if json.Valid(spec.Body) {
			spec.Request.ContentType = "application/json"
		}
	}
	if _, err := tm.s.fire(t, spec); err != nil {
		tm.s.log.Warn("trigger: firing not accepted", "app", t.def.App, "trigger", t.def.Name, "err", err)
	}
}

// next returns when t fires next (zero when it is not a timer).
func (tm *timers) next(t *trig) time.Time {
	if id, ok := tm.entries[t]; ok {
		return tm.cron.Entry(id).Next
	}
	if e := tm.every[t]; e != nil {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.next
	}
	return time.Time{}
}

func (tm *timers) stop() {
	<-tm.cron.Stop().Done()
	close(tm.done)
	tm.wg.Wait()
}
