package fl

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spry-dev/spry/internal/mono"
)

// EnvStateDir names the environment variable of the directory where
// fl-top writes each job's spec, results and latest model whenever a round
// closes, so that its jobs survive a restart of the top (a crash, a kill):
// the new top reads them at its first request, and every job goes on at
// the round that was open, from the last global model. The updates of
// that round the old top had taken are gone with it: the round starts
// again empty, and the job's status says so (restarted). Unset: jobs live
// in the top's memory only.
const EnvStateDir = "FL_STATE_DIR"

// savedJob is a job as the state directory holds it: <job>.json, next to
// <job>.<round>.model, the latest model's float32s.
type savedJob struct {
	Job        Job      `json:"job"`
	Round      int      `json:"round"` // the open round
	ModelRound int      `json:"modelRound"`
	Done       bool     `json:"done,omitempty"`
	Results    []Result `json:"results"`
}

// saver writes jobs to the state directory, one at a time, off the top's
// lock: the model is read where it lies in the pool, pinned meanwhile.
type saver struct {
	dir  string
	mu   sync.Mutex
	seq  map[string]uint64 // the latest save asked for, per job
	warn sync.Once
}

func newSaver(dir string) *saver {
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		slog.Warn("fl-top: the state directory cannot be made: jobs will not survive a restart of the top", "dir", dir, "error", err)
		return nil
	}
	return &saver{dir: dir, seq: map[string]uint64{}}
}

func (s *saver) file(id string, parts ...string) string {
	return filepath.Join(s.dir, strings.Join(append([]string{id}, parts...), "."))
}

// save writes job j as it is now. Called with the top's mu held: it takes
// what it needs and writes in the background.
func (t *top) save(j *topJob) {
	s := t.saver
	if s == nil {
		return
	}
	sv := savedJob{Job: j.job, Round: j.round.N(), ModelRound: j.mround[0], Done: j.done, Results: append([]Result(nil), j.results...)}
	m := j.models[0]
	tok, ok := t.p.Pin(m.idx, m.gen, t.self)
	if !ok {
		return
	}
	s.mu.Lock()
	s.seq[j.job.ID]++
	seq := s.seq[j.job.ID]
	s.mu.Unlock()
	p, self, n := t.p, t.self, int(j.job.Bytes())
	go func() {
		defer p.Free(tok, self)
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.seq[sv.Job.ID] != seq {
			return // a later save of the job comes after
		}
		if err := s.write(sv, p.Data(m.idx)[:n]); err != nil {
			s.warn.Do(func() {
				slog.Warn("fl-top: a job could not be saved: it will not survive a restart of the top", "job", sv.Job.ID, "error", err)
			})
		}
	}()
}

func (s *saver) write(sv savedJob, model []byte) error {
	mf := s.file(sv.Job.ID, strconv.Itoa(sv.ModelRound), "model")
	if err := writeFile(mf, model); err != nil {
		return err
	}
	b, err := json.Marshal(sv)
	if err != nil {
		return err
	}
	if err := writeFile(s.file(sv.Job.ID, "json"), b); err != nil {
		return err
	}
	// The models before are no longer named.
	old, _ := filepath.Glob(s.file(sv.Job.ID, "*", "model"))
	for _, f := range old {
		if f != mf {
			os.Remove(f)
		}
	}
	return nil
}

// writeFile writes b to path whole or not at all.
func writeFile(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// forget removes job id from the state directory. Called with mu held.
func (t *top) forget(id string) {
	s := t.saver
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq[id]++ // saves asked for before do not write
	os.Remove(s.file(id, "json"))
	old, _ := filepath.Glob(s.file(id, "*", "model"))
	for _, f := range old {
		os.Remove(f)
	}
}

// restore reads the jobs a top before this one saved, at its first
// request. Called with mu held.
func (t *top) restore() {
	s := t.saver
	if s == nil {
		return
	}
	files, _ := filepath.Glob(filepath.Join(s.dir, "*.json"))
	now := mono.Now()
	for _, f := range files {
		id := strings.TrimSuffix(filepath.Base(f), ".json")
		if err := t.restoreJob(id, f, now); err != nil {
			slog.Warn("fl-top: a saved job could not be restored", "job", id, "error", err)
		}
	}
}

func (t *top) restoreJob(id, file string, now int64) error {
	if !ValidJobID(id) || t.jobs[id] != nil {
		return fmt.Errorf("not a job's file")
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var sv savedJob
	if err := json.Unmarshal(b, &sv); err != nil {
		return err
	}
	if sv.Job.ID != id || sv.Job.Params <= 0 || sv.Round < 1 {
		return fmt.Errorf("%s: not a saved job", file)
	}
	model, err := os.ReadFile(t.saver.file(id, strconv.Itoa(sv.ModelRound), "model"))
	if err != nil {
		return err
	}
	if int64(len(model)) != sv.Job.Bytes() {
		return fmt.Errorf("the model of round %d has %d bytes, want %d", sv.ModelRound, len(model), sv.Job.Bytes())
	}
	j, e := t.newJob(sv.Job, now)
	if e != nil {
		return fmt.Errorf("%s", e.Msg)
	}
	copy(t.p.Data(j.models[0].idx)[:len(model)], model)
	j.mround[0], j.mround[1] = sv.ModelRound, sv.ModelRound
	j.results = sv.Results
	j.done = sv.Done
	j.round = NewRound(&j.job, sv.Round, now)
	j.tbl.round.Store(uint32(sv.Round))
	j.restarted, j.restartModel = time.Now().UTC().Format(time.RFC3339), sv.ModelRound
	t.add(id, j)
	return nil
}
