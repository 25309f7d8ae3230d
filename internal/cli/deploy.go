package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/spry-dev/spry/internal/cluster/api"
	"github.com/spry-dev/spry/internal/cluster/kube"
	"github.com/spry-dev/spry/internal/config"
	"github.com/spry-dev/spry/internal/node"
)

func deployCmd() *cobra.Command {
	var kubeconfig, ns, file, admin string
	var toNode, del bool
	cmd := &cobra.Command{
		Use:   "deploy -f spry.yaml",
		Short: "Deploy an app to a cluster (a SpryApp) or to a running node",
		Long: `Validates spry.yaml as spry up --check does, then deploys it:

- to a cluster, when a kubeconfig is at hand (--kubeconfig, $KUBECONFIG, in-cluster,
  ~/.kube/config): the SpryApp of that name (the app: key) in the namespace is created
  or updated, with the file as its spec; the controller places it, kubectl get
  spryapps shows it;
- to the node at --admin otherwise, or with --node: the node runs the app beside the
  apps of its config files (a changed app is replaced with no request lost), and
  keeps it across restarts and reloads. Relative paths in the file (go: packages,
  exec: programs) are taken from the file's directory on this machine.

--delete removes the app again (the SpryApp, or the node's deployed app).`,
		Example: `  spry deploy -f examples/hello/spry.yaml              # a cluster if a kubeconfig is found, else the local node
  spry deploy -f spry.yaml --node                      # the node at 127.0.0.1:8081 (--admin)
  spry deploy -f spry.yaml -n shop --kubeconfig ./kc
  spry deploy -f spry.yaml --delete`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return exitError{2, "deploy: -f spry.yaml is required"}
			}
			data, err := os.ReadFile(file)
			if err != nil {
				return exitError{2, err.Error()}
			}
			dir, err := filepath.Abs(filepath.Dir(file))
			if err != nil {
				return exitError{2, err.Error()}
			}
			app, err := config.Parse(file, data, dir, configOptions())
			if err != nil {
				return exitError{2, err.Error()}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Minute)
			defer cancel()
			out := cmd.OutOrStdout()
			if toNode || cmd.Flags().Changed("admin") || (kubeconfig == "" && !kubeconfigAtHand()) {
				return deployToNode(ctx, out, admin, app.Name, data, dir, del)
			}
			return deployToCluster(ctx, out, kubeconfig, ns, app.Name, data, del)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "file", "f", "", "the app's spry.yaml")
	f.StringVar(&kubeconfig, "kubeconfig", "", "deploy to the cluster of this kubeconfig (default $KUBECONFIG, in-cluster, ~/.kube/config)")
	f.StringVarP(&ns, "namespace", "n", "", "cluster: namespace of the SpryApp (default: the kubeconfig's, else default)")
	f.BoolVar(&toNode, "node", false, "deploy to the node at --admin even when a kubeconfig is at hand")
	f.StringVar(&admin, "admin", DefaultAdmin, "the node's admin API address (deploys to that node)")
	f.BoolVar(&del, "delete", false, "remove the app instead")
	return cmd
}

// kubeconfigAtHand reports whether kube.Load would find a cluster.
func kubeconfigAtHand() bool {
	if os.Getenv("KUBECONFIG") != "" || os.Getenv("KUBERNETES_SERVICE_HOST") != "" {
		return true
	}
	home, _ := os.UserHomeDir()
	_, err := os.Stat(filepath.Join(home, ".kube", "config"))
	return err == nil
}

func deployToNode(ctx context.Context, out io.Writer, admin, name string, data []byte, dir string, del bool) error {
	method, path := "PUT", "/v1/apps"
	if del {
		method, path = "DELETE", "/v1/apps/"+name
	}
	req, err := adminRequest(ctx, method, admin, path)
	if err != nil {
		return exitError{2, err.Error()}
	}
	if !del {
		req.Body = io.NopCloser(bytes.NewReader(data))
		req.ContentLength = int64(len(data))
		req.Header.Set("Content-Type", "application/yaml")
		req.Header.Set("X-Spry-Dir", dir)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("no spry node answers at %s (is `spry up` running? --admin sets the address; --kubeconfig deploys to a cluster): %w", admin, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != 200 {
		return exitError{1, "deploy to the node at " + admin + " failed: " + adminError(resp.Status, body)}
	}
	var res node.ReloadResult
	if err := json.Unmarshal(body, &res); err != nil {
		return fmt.Errorf("admin API at %s: bad answer: %w", admin, err)
	}
	what := "deployed"
	if del {
		what = "removed"
	}
	fmt.Fprintf(out, "app %s %s on the node at %s in %s: %s\n", name, what, admin, res.Took, res)
	return nil
}

func deployToCluster(ctx context.Context, out io.Writer, kubeconfig, ns, name string, data []byte, del bool) error {
	spec, err := yamlToJSON(data)
	if err != nil {
		return exitError{2, err.Error()}
	}
	c, err := kube.Load(kubeconfig)
	if err != nil {
		return exitError{2, err.Error()}
	}
	if ns == "" {
		ns = c.Namespace
	}
	if ns == "" {
		ns = "default"
	}
	if del {
		if err := c.Delete(ctx, kube.AppPath(ns, name)); err != nil {
			return fmt.Errorf("delete spryapp %s/%s: %w", ns, name, err)
		}
		fmt.Fprintf(out, "spryapp %s/%s deleted\n", ns, name)
		return nil
	}
	var cur api.SpryApp
	err = c.Get(ctx, kube.AppPath(ns, name), &cur)
	switch {
	case errors.Is(err, kube.ErrNotFound):
		if err := c.Create(ctx, kube.AppsPath(ns), kube.NewApp(ns, name, spec), &cur); err != nil {
			return fmt.Errorf("create spryapp %s/%s: %w", ns, name, err)
		}
		fmt.Fprintf(out, "spryapp %s/%s created\n", ns, name)
	case err != nil:
		return fmt.Errorf("get spryapp %s/%s: %w", ns, name, err)
	default:
		cur.Spec = spec
		if err := c.Update(ctx, kube.AppPath(ns, name), &cur, &cur); err != nil {
			return fmt.Errorf("update spryapp %s/%s: %w", ns, name, err)
		}
		fmt.Fprintf(out, "spryapp %s/%s updated (generation %d)\n", ns, name, cur.Metadata.Generation)
	}
	return nil
}
