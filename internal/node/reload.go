package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spry-dev/spry/internal/config"
	"github.com/spry-dev/spry/internal/gateway"
	rt "github.com/spry-dev/spry/internal/runtime"
)

// A reload swaps the apps a node runs for those of a new config, app by
// app, without dropping a request:
//
//  1. go: functions are built; a build error ends the reload here.
//  2. Each app whose config or programs changed (and each new app) is
//     created beside the running one: a pool, a transport and instances of
//     its own, under the same uid. When any of them fails to start, the new
//     apps are stopped again and the running ones keep serving.
//  3. The gateway switches its routes to the new apps' chains in one step:
//     a request arriving from then on runs on the new app.
//  4. Each replaced or removed app drains: the requests it admitted finish
//     in it (its routing table and instances are untouched meanwhile);
//     then its instances stop and its pool goes.
//
// An app that did not change keeps running as it is.

// ReloadResult says what a reload did, app by app.
type ReloadResult struct {
	Added     []string `json:"added"`
	Changed   []string `json:"changed"`
	Removed   []string `json:"removed"`
	Unchanged []string `json:"unchanged"`
	Took      string   `json:"took"`
}

func (r ReloadResult) String() string {
	var parts []string
	for _, p := range []struct {
		what  string
		names []string
	}{{"added", r.Added}, {"changed", r.Changed}, {"removed", r.Removed}, {"unchanged", r.Unchanged}} {
		if len(p.names) > 0 {
			parts = append(parts, p.what+" "+strings.Join(p.names, ", "))
		}
	}
	if len(parts) == 0 {
		return "nothing to run"
	}
	return strings.Join(parts, "; ")
}

// ErrNoReload is returned by Reload when the node was started without a
// way to read its config again (Config.Load).
var ErrNoReload = errors.New("node: this node cannot reload its config")

// ErrConfig wraps a config that failed to load or to start: the node keeps
// running what it ran.
var ErrConfig = errors.New("the running config stays")

// Reload reads the config again (Config.Load) and applies it (Apply).
func (n *Node) Reload(ctx context.Context) (ReloadResult, error) {
	if n.cfg.Load == nil {
		return ReloadResult{}, ErrNoReload
	}
	apps, err := n.cfg.Load()
	if err == nil {
		apps, err = n.reloadDeployed(apps)
	}
	if err != nil {
		return ReloadResult{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	// The certificate first (a renewed one is the usual reason to
	// reload); on error nothing changes.
	if err := n.ReloadCerts(config.TLSOf(apps)); err != nil {
		return ReloadResult{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return n.Apply(ctx, apps)
}

// Apply makes the node run apps: new apps start, changed ones are replaced
// and drained, missing ones drained and stopped (see the comment at the
// top of this file). On error nothing changed.
func (n *Node) Apply(ctx context.Context, apps []*config.App) (res ReloadResult, err error) {
	n.reload.Lock()
	defer n.reload.Unlock()
	began := time.Now()
	if len(apps) == 0 && !n.cfg.Cluster {
		return res, fmt.Errorf("%w: no apps to run", ErrConfig)
	}
	if err := config.Conflicts(apps); err != nil {
		return res, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	exes, err := n.executables(ctx, apps)
	if err != nil {
		return res, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	n.appsMu.Lock()
	old := slices.Clone(n.apps)
	n.appsMu.Unlock()
	byName := map[string]*app{}
	for _, a := range old {
		byName[a.cfg.Name] = a
	}

	var next, started, replaced []*app
	defer func() {
		if err != nil {
			for _, a := range started {
				a.stopAndClose()
			}
		}
	}()
	for _, ac := range apps {
		prev := byName[ac.Name]
		delete(byName, ac.Name)
		if prev != nil && prev.fingerprint == fingerprint(ac, exes) {
			next = append(next, prev)
			res.Unchanged = append(res.Unchanged, ac.Name)
			continue
		}
		beside := prev
		if beside == nil {
			// Removed a moment ago and back (a cluster node that was
			// counted lost): the old one may still be draining; the new
			// one starts beside it as beside a replaced one.
			beside = n.draining(ac.Name)
		}
		a, err := newApp(n, ac, exes, beside)
		if err != nil {
			return ReloadResult{}, fmt.Errorf("%w: %w", ErrConfig, err)
		}
		started = append(started, a)
		if err := a.joinPeers(); err != nil {
			return ReloadResult{}, fmt.Errorf("%w: %w", ErrConfig, err)
		}
		next = append(next, a)
		if prev != nil {
			replaced = append(replaced, prev)
			res.Changed = append(res.Changed, ac.Name)
		} else {
			res.Added = append(res.Added, ac.Name)
		}
	}
	if err := n.launch(ctx, started); err != nil {
		return ReloadResult{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	for _, a := range old {
		if byName[a.cfg.Name] != nil {
			replaced = append(replaced, a)
			res.Removed = append(res.Removed, a.cfg.Name)
		}
	}
	var chains []*gateway.Chain
	for _, a := range next {
		chains = append(chains, a.chains()...)
	}
	if err := n.gw.SetChains(chains); err != nil {
		return ReloadResult{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	n.appsMu.Lock()
	n.apps = next
	n.retired = append(n.retired, replaced...)
	n.cfg.Apps = apps
	n.appsMu.Unlock()
	if n.events != nil {
		n.events.reconfigure(apps)
	}
	for _, a := range replaced {
		n.sup.Add(1)
		go func() {
			defer n.sup.Done()
			n.retire(a)
		}()
	}
	res.Took = time.Since(began).Round(time.Millisecond).String()
	return res, nil
}

// draining is the retired app named name still draining, or nil.
func (n *Node) draining(name string) *app {
	n.appsMu.Lock()
	defer n.appsMu.Unlock()
	for i := len(n.retired) - 1; i >= 0; i-- {
		if n.retired[i].cfg.Name == name {
			return n.retired[i]
		}
	}
	return nil
}

// retire drains app a, which the gateway no longer routes to: once every
// request it admitted is answered (or the longest chain timeout passed),
// its instances stop and it is closed.
func (n *Node) retire(a *app) {
	longest := time.Duration(0)
	for _, c := range a.cfg.Chains {
		longest = max(longest, c.Timeout)
	}
	limit := time.Now().Add(longest + n.cfg.StopGrace)
	for a.gw.Inflight() > 0 && time.Now().Before(limit) {
		select {
		case <-n.supCtx.Done():
			return // Shutdown closes it
		case <-time.After(5 * time.Millisecond):
		}
	}
	a.stopAndClose()
	n.appsMu.Lock()
	if i := slices.Index(n.retired, a); i >= 0 {
		n.retired = slices.Delete(n.retired, i, i+1)
		n.appsMu.Unlock()
		n.log.Info("app drained and stopped", "app", a.cfg.Name)
		return
	}
	n.appsMu.Unlock()
}

// stopAndClose stops a's control loops and instances (draining what they
// hold) and releases everything it has.
func (a *app) stopAndClose() {
	if a.stopWatch != nil {
		a.stopWatch()
	}
	a.watching.Wait()
	for _, f := range a.fns {
		f.setWant(0, nil)
	}
	for _, f := range a.fns {
		for _, in := range f.insts {
			f.mu.Lock()
			done := in.done
			f.mu.Unlock()
			if done != nil {
				<-done
			}
		}
	}
	a.close()
}

// fingerprint identifies what app ac runs: its resolved config (without
// the lines it came from) and its programs (a go: build's path names its
// content; an exec: program, a python: handler and an http: or lambda:
// program are hashed).
func fingerprint(ac *config.App, exes map[*config.Function]rt.Command) string {
	h := sha256.New()
	c := *ac
	c.Line, c.File = 0, ""
	c.Functions, c.Chains = nil, nil
	enc := json.NewEncoder(h)
	enc.Encode(c)
	for _, s := range ac.Secrets {
		h.Write(s.Value) // the values are not in the JSON
		h.Write([]byte{0})
	}
	for _, f := range ac.Functions {
		fc := *f
		fc.Line, fc.File = 0, ""
		enc.Encode(fc)
		enc.Encode(exes[f])
		switch f.Kind {
		case config.Exec:
			hashProgram(h, f.Exec[0])
		case config.Python:
			hashProgram(h, f.Python)
		case config.HTTP:
			hashProgram(h, f.HTTP[0])
		case config.Lambda:
			hashProgram(h, f.Lambda[0])
		case config.Wasm:
			if !f.WasmBuild {
				hashProgram(h, f.Wasm)
			}
		}
	}
	for _, ch := range ac.Chains {
		cc := *ch
		cc.Line, cc.File = 0, ""
		enc.Encode(cc)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func hashProgram(h io.Writer, path string) {
	f, err := os.Open(path)
	if err != nil {
		fmt.Fprintf(h, "unreadable %s: %v\n", path, err)
		return
	}
	defer f.Close()
	io.Copy(h, f)
}
