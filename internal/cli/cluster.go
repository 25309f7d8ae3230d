package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/spry-dev/spry/internal/cluster/api"
	"github.com/spry-dev/spry/internal/cluster/kube"
	"github.com/spry-dev/spry/internal/config"
)

// controllerCmd runs the cluster controller, which lives in its own
// binary (spry-controller, beside spry or on PATH) so that spry — the
// node and the function instances it starts — links no client-go.
func controllerCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "controller [flags]",
		Short: "Run the cluster controller (mu autoscaling, DRF placement over the node agents; Kubernetes)",
		Long: `Runs spry-controller (installed beside spry) with the same flags: see
spry-controller --help and docs/cluster.md.`,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			bin, err := companion("spry-controller")
			if err != nil {
				return exitError{2, err.Error()}
			}
			return syscall.Exec(bin, append([]string{bin}, args...), os.Environ())
		},
	}
}

// companion finds a binary installed with spry: beside it, then on PATH.
func companion(name string) (string, error) {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s not found beside spry or on PATH (go build -o DIR ./cmd/%s)", name, name)
}

// yamlToJSON converts a spry.yaml document to JSON, a SpryApp's spec.
func yamlToJSON(data []byte) (json.RawMessage, error) {
	var v any
	if err := yaml.Unmarshal(data, &v); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

func deployCmd() *cobra.Command {
	var kubeconfig, ns, file string
	cmd := &cobra.Command{
		Use:   "deploy -f spry.yaml",
		Short: "Deploy an app to a cluster: the spry.yaml becomes a SpryApp's spec",
		Long: `Validates spry.yaml as spry up --check does, then creates or updates the SpryApp
of that name (the app: key) in the namespace, with the file as its spec. The
controller places it; kubectl get spryapps shows it.`,
		Example: `  spry deploy -f examples/hello/spry.yaml              # kubeconfig: $KUBECONFIG or ~/.kube/config
  spry deploy -f spry.yaml -n shop --kubeconfig ./kc`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return exitError{2, "deploy: -f spry.yaml is required"}
			}
			data, err := os.ReadFile(file)
			if err != nil {
				return exitError{2, err.Error()}
			}
			app, err := config.Parse(file, data, filepath.Dir(file), configOptions())
			if err != nil {
				return exitError{2, err.Error()}
			}
			spec, err := yamlToJSON(data)
			if err != nil {
				return exitError{2, fmt.Sprintf("%s: %v", file, err)}
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
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			var cur api.SpryApp
			err = c.Get(ctx, kube.AppPath(ns, app.Name), &cur)
			switch {
			case errors.Is(err, kube.ErrNotFound):
				if err := c.Create(ctx, kube.AppsPath(ns), kube.NewApp(ns, app.Name, spec), &cur); err != nil {
					return fmt.Errorf("create spryapp %s/%s: %w", ns, app.Name, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "spryapp %s/%s created\n", ns, app.Name)
			case err != nil:
				return fmt.Errorf("get spryapp %s/%s: %w", ns, app.Name, err)
			default:
				cur.Spec = spec
				if err := c.Update(ctx, kube.AppPath(ns, app.Name), &cur, &cur); err != nil {
					return fmt.Errorf("update spryapp %s/%s: %w", ns, app.Name, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "spryapp %s/%s updated (generation %d)\n", ns, app.Name, cur.Metadata.Generation)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "file", "f", "", "the app's spry.yaml")
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default $KUBECONFIG, in-cluster, ~/.kube/config)")
	f.StringVarP(&ns, "namespace", "n", "", "namespace of the SpryApp (default: the kubeconfig's, else default)")
	return cmd
}
