package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spry-dev/spry/internal/config"
)

// Deployed apps. `spry deploy -f spry.yaml` to a node (not a cluster)
// hands it an app's spry.yaml over the admin API: the node runs it beside
// the apps of its config files, applied as a reload applies a change (a
// new app starts, a changed one is replaced with no request lost). The
// node keeps what was deployed in its data directory, so a restart or a
// `spry reload` keeps it too, until `spry deploy --delete` removes it.

// deployment is one deployed app: its spry.yaml and the directory its
// relative paths (go: packages, exec: programs) are relative to.
type deployment struct {
	Name string `json:"name"`
	Dir  string `json:"dir"`
	Spec []byte `json:"spec"`
}

// ErrClusterNode: a node of a cluster runs what the controller assigns.
var ErrClusterNode = errors.New("node: this node is part of a cluster: deploy with a kubeconfig (spry deploy -f spry.yaml --kubeconfig …)")

// ErrFromFile: the app comes from one of the node's config files.
var ErrFromFile = errors.New("node: the app comes from a config file of this node: edit the file and spry reload")

// ErrNotDeployed: no deployed app of that name.
var ErrNotDeployed = errors.New("node: no app of that name was deployed")

// Deploy runs the app of spec (a spry.yaml; relative paths in it are
// relative to dir) on the node, in place of a deployed app of the same
// name, and keeps it.
func (n *Node) Deploy(ctx context.Context, spec []byte, dir string) (ReloadResult, error) {
	if n.cfg.Cluster {
		return ReloadResult{}, ErrClusterNode
	}
	ac, err := config.Parse("deployed spry.yaml", spec, dir, n.cfg.Options)
	if err != nil {
		return ReloadResult{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	n.deployMu.Lock()
	defer n.deployMu.Unlock()
	if n.fromFile(ac.Name) {
		return ReloadResult{}, fmt.Errorf("%w (app %s)", ErrFromFile, ac.Name)
	}
	d := deployment{Name: ac.Name, Dir: dir, Spec: spec}
	apps := n.withDeployed(ac)
	res, err := n.Apply(ctx, apps)
	if err != nil {
		return res, err
	}
	n.deployed[ac.Name] = d
	if err := n.keep(d); err != nil {
		n.log.Warn("deployed app not kept for the next start", "app", ac.Name, "err", err)
	}
	return res, nil
}

// Undeploy stops a deployed app and forgets it.
func (n *Node) Undeploy(ctx context.Context, name string) (ReloadResult, error) {
	n.deployMu.Lock()
	defer n.deployMu.Unlock()
	if _, ok := n.deployed[name]; !ok {
		return ReloadResult{}, fmt.Errorf("%w: %s", ErrNotDeployed, name)
	}
	var apps []*config.App
	n.appsMu.Lock()
	for _, a := range n.cfg.Apps {
		if a.Name != name {
			apps = append(apps, a)
		}
	}
	n.appsMu.Unlock()
	res, err := n.Apply(ctx, apps)
	if err != nil {
		return res, err
	}
	delete(n.deployed, name)
	if dir := n.deployDir(); dir != "" {
		os.Remove(filepath.Join(dir, name+".json"))
	}
	return res, nil
}

// fromFile reports whether app name is one of the config files' apps.
func (n *Node) fromFile(name string) bool {
	if _, ok := n.deployed[name]; ok {
		return false
	}
	n.appsMu.Lock()
	defer n.appsMu.Unlock()
	return slices.ContainsFunc(n.cfg.Apps, func(a *config.App) bool { return a.Name == name })
}

// withDeployed returns the apps the node runs with ac in place of the app
// of its name, or added.
func (n *Node) withDeployed(ac *config.App) []*config.App {
	n.appsMu.Lock()
	defer n.appsMu.Unlock()
	var apps []*config.App
	for _, a := range n.cfg.Apps {
		if a.Name != ac.Name {
			apps = append(apps, a)
		}
	}
	return append(apps, ac)
}

// deployDir is where deployed apps are kept ("" when the node keeps no
// data).
func (n *Node) deployDir() string {
	if n.cfg.DataDir == "" {
		return ""
	}
	return filepath.Join(n.cfg.DataDir, "deployed")
}

func (n *Node) keep(d deployment) error {
	dir := n.deployDir()
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b, _ := json.Marshal(d)
	tmp := filepath.Join(dir, d.Name+".json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, d.Name+".json"))
}

// loadDeployed reads the apps deployed before the node's last stop (those
// that no longer load are logged and left out).
func (n *Node) loadDeployed() []*config.App {
	n.deployed = map[string]deployment{}
	dir := n.deployDir()
	if dir == "" || n.cfg.Cluster {
		return nil
	}
	ents, _ := os.ReadDir(dir)
	var apps []*config.App
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		var d deployment
		if err == nil {
			err = json.Unmarshal(b, &d)
		}
		var ac *config.App
		if err == nil {
			ac, err = config.Parse("deployed spry.yaml", d.Spec, d.Dir, n.cfg.Options)
		}
		if err == nil && slices.ContainsFunc(n.cfg.Apps, func(a *config.App) bool { return a.Name == ac.Name }) {
			err = fmt.Errorf("app %s now comes from a config file", ac.Name)
		}
		if err != nil {
			n.log.Warn("a deployed app does not load: left out", "file", e.Name(), "err", err)
			continue
		}
		n.deployed[d.Name] = d
		apps = append(apps, ac)
	}
	return apps
}

// reloadDeployed appends the deployed apps to the config files' apps, for
// a reload.
func (n *Node) reloadDeployed(apps []*config.App) ([]*config.App, error) {
	n.deployMu.Lock()
	defer n.deployMu.Unlock()
	for _, d := range n.deployed {
		ac, err := config.Parse("deployed spry.yaml", d.Spec, d.Dir, n.cfg.Options)
		if err != nil {
			return nil, fmt.Errorf("deployed app %s: %w", d.Name, err)
		}
		if slices.ContainsFunc(apps, func(a *config.App) bool { return a.Name == ac.Name }) {
			return nil, fmt.Errorf("app %s is in a config file and was deployed too: spry deploy --delete %s first", ac.Name, ac.Name)
		}
		apps = append(apps, ac)
	}
	return apps, nil
}

// serveDeploy serves PUT /v1/apps (a spry.yaml in the body, the directory
// its paths are relative to in X-Spry-Dir) and DELETE /v1/apps/{name}.
func (n *Node) serveDeploy(mux *http.ServeMux) {
	answer := func(w http.ResponseWriter, res ReloadResult, err error) {
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			code := http.StatusUnprocessableEntity
			switch {
			case errors.Is(err, ErrClusterNode), errors.Is(err, ErrFromFile):
				code = http.StatusConflict
			case errors.Is(err, ErrNotDeployed):
				code = http.StatusNotFound
			}
			w.WriteHeader(code)
			json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
			return
		}
		json.NewEncoder(w).Encode(res)
	}
	mux.HandleFunc("PUT /v1/apps", func(w http.ResponseWriter, r *http.Request) {
		spec, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			answer(w, ReloadResult{}, fmt.Errorf("%w: %w", ErrConfig, err))
			return
		}
		dir := r.Header.Get("X-Spry-Dir")
		if dir != "" && !filepath.IsAbs(dir) {
			answer(w, ReloadResult{}, fmt.Errorf("%w: X-Spry-Dir %q is not an absolute path", ErrConfig, dir))
			return
		}
		res, err := n.Deploy(r.Context(), spec, dir)
		if err == nil {
			n.log.Info("deployed", "apps", res.String(), "took", res.Took)
		}
		answer(w, res, err)
	})
	mux.HandleFunc("DELETE /v1/apps/{name}", func(w http.ResponseWriter, r *http.Request) {
		res, err := n.Undeploy(r.Context(), r.PathValue("name"))
		if err == nil {
			n.log.Info("undeployed", "apps", res.String(), "took", res.Took)
		}
		answer(w, res, err)
	})
}
