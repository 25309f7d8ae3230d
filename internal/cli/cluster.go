package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/spry-dev/spry/internal/cluster/agent"
	"github.com/spry-dev/spry/internal/cluster/api"
	"github.com/spry-dev/spry/internal/cluster/kube"
	"github.com/spry-dev/spry/internal/config"
	"github.com/spry-dev/spry/internal/node"
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

// clusterFlags are spry up's flags for a node agent (--cluster).
type clusterFlags struct {
	on                            bool
	name, ns, kubeconfig, gateway string
	cpuMillis                     int64
	memory                        string
	period, lease                 time.Duration
	peerListen, peerToken         string
}

func (c *clusterFlags) flags(f *pflag.FlagSet) {
	f.BoolVar(&c.on, "cluster", false, "run as a node agent of a cluster: register, heartbeat, run what the controller assigns (docs/cluster.md)")
	f.StringVar(&c.name, "node-name", "", "--cluster: this node's name (default the host name)")
	f.StringVar(&c.ns, "namespace", "spry-system", "--cluster: namespace of the node leases")
	f.StringVar(&c.kubeconfig, "kubeconfig", "", "--cluster: kubeconfig file (default $KUBECONFIG, in-cluster, ~/.kube/config)")
	f.StringVar(&c.gateway, "advertise", "", "--cluster: the address other nodes and clients reach this node's gateway at (host or host:port)")
	f.Int64Var(&c.cpuMillis, "capacity-cpu", 0, "--cluster: millicores offered to instances (default all CPUs)")
	f.StringVar(&c.memory, "capacity-memory", "", "--cluster: memory offered to instances, a size like 8GiB (default all)")
	f.DurationVar(&c.period, "heartbeat", time.Second, "--cluster: heartbeat and lease renewal period")
	f.DurationVar(&c.lease, "lease", 10*time.Second, "--cluster: how long the node counts as up after a heartbeat")
	f.StringVar(&c.peerListen, "peer-listen", ":7946", "--cluster: where this node takes the links of other nodes (hops of chains between nodes)")
	f.StringVar(&c.peerToken, "peer-token-file", "", "--cluster: the cluster's shared secret for links between nodes (default: links only from the nodes' own addresses)")
}

// nodeName is the node's name: --node-name, else the host name.
func (c *clusterFlags) nodeName() (string, error) {
	if c.name != "" {
		return c.name, nil
	}
	name, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("--node-name: %w", err)
	}
	return name, nil
}

// peers is the node's side of the hops between nodes.
func (c *clusterFlags) peers() (node.PeerConfig, error) {
	name, err := c.nodeName()
	if err != nil {
		return node.PeerConfig{}, err
	}
	pc := node.PeerConfig{Name: name, Listen: c.peerListen}
	if c.peerToken != "" {
		b, err := os.ReadFile(c.peerToken)
		if err != nil {
			return pc, fmt.Errorf("--peer-token-file: %w", err)
		}
		if pc.Token = []byte(strings.TrimSpace(string(b))); len(pc.Token) == 0 {
			return pc, fmt.Errorf("--peer-token-file %s: the file is empty", c.peerToken)
		}
	}
	return pc, nil
}

// start registers the node and runs its agent until ctx ends; a failure
// to register is returned, a later stop goes to done.
func (c *clusterFlags) start(ctx context.Context, n *node.Node, log *slog.Logger, done chan<- error) error {
	kc, err := kube.Load(c.kubeconfig)
	if err != nil {
		return err
	}
	name, err := c.nodeName()
	if err != nil {
		return err
	}
	spec := api.NodeSpec{Capacity: agent.MachineCapacity()}
	if c.cpuMillis > 0 {
		spec.Capacity.CPUMillis = c.cpuMillis
	}
	if c.memory != "" {
		m, err := config.ParseSize(c.memory)
		if err != nil {
			return fmt.Errorf("--capacity-memory %q: %w", c.memory, err)
		}
		spec.Capacity.MemoryBytes = int64(m)
	}
	port := strconv.Itoa(n.Addr().(*net.TCPAddr).Port)
	host := "127.0.0.1"
	switch h, p, err := net.SplitHostPort(c.gateway); {
	case c.gateway == "":
		spec.Gateway = net.JoinHostPort(host, port)
	case err != nil: // a host alone
		host = c.gateway
		spec.Gateway = net.JoinHostPort(host, port)
	default:
		host = h
		spec.Gateway = net.JoinHostPort(h, p)
	}
	if pa, ok := n.PeerAddr().(*net.TCPAddr); ok {
		spec.Peer = net.JoinHostPort(host, strconv.Itoa(pa.Port))
	}
	a, err := agent.New(agent.Config{Name: name, Namespace: c.ns, Client: kc, Node: n, Spec: spec,
		Period: c.period, LeaseDuration: c.lease, Options: configOptions(), Log: log})
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := a.Register(rctx); err != nil {
		return err
	}
	go func() { done <- a.Run(ctx) }()
	return nil
}

// clusterStatusFlags select spry status --cluster.
type clusterStatusFlags struct {
	on             bool
	kubeconfig, ns string
}

func (c *clusterStatusFlags) flags(f *pflag.FlagSet) {
	f.BoolVar(&c.on, "cluster", false, "the cluster's apps and nodes (from Kubernetes) instead of one node's")
	f.StringVar(&c.kubeconfig, "kubeconfig", "", "--cluster: kubeconfig file (default $KUBECONFIG, in-cluster, ~/.kube/config)")
	f.StringVar(&c.ns, "namespace", "spry-system", "--cluster: namespace of the node leases")
}

// ClusterStatus is spry status --cluster -o json.
type ClusterStatus struct {
	Apps  []api.SpryApp    `json:"apps"`
	Nodes []ClusterNodeRow `json:"nodes"`
}

// ClusterNodeRow is one node of the cluster and whether its lease is fresh.
type ClusterNodeRow struct {
	api.SpryNode
	Up bool `json:"up"`
}

func clusterStatus(ctx context.Context, out io.Writer, cl clusterStatusFlags, output string) error {
	c, err := kube.Load(cl.kubeconfig)
	if err != nil {
		return exitError{2, err.Error()}
	}
	var apps struct{ Items []api.SpryApp }
	var nodes struct{ Items []api.SpryNode }
	var leases struct{ Items []api.Lease }
	if err := c.Get(ctx, "/apis/spry.dev/v1alpha1/spryapps", &apps); err != nil {
		return err
	}
	if err := c.Get(ctx, kube.NodesPath(), &nodes); err != nil {
		return err
	}
	if err := c.Get(ctx, kube.LeasesPath(cl.ns), &leases); err != nil {
		return err
	}
	now := time.Now()
	st := ClusterStatus{Apps: apps.Items}
	for _, n := range nodes.Items {
		row := ClusterNodeRow{SpryNode: n}
		for i := range leases.Items {
			if leases.Items[i].Metadata.Name == api.LeaseName(n.Metadata.Name) {
				row.Up = leases.Items[i].Fresh(now)
			}
		}
		st.Nodes = append(st.Nodes, row)
	}
	switch output {
	case "json":
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	case "table":
	default:
		return exitError{2, fmt.Sprintf("-o %q: want table or json", output)}
	}
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tUP\tGATEWAY\tCPU\tMEMORY\tINSTANCES\t")
	for _, n := range st.Nodes {
		inst := int32(0)
		for _, f := range n.Status.Functions {
			inst += f.Ready
		}
		fmt.Fprintf(w, "%s\t%v\t%s\t%dm\t%s\t%d\t\n", n.Metadata.Name, n.Up, n.Spec.Gateway, n.Spec.Capacity.CPUMillis,
			fmt.Sprintf("%.1fGiB", float64(n.Spec.Capacity.MemoryBytes)/(1<<30)), inst)
	}
	fmt.Fprintln(w, "\t\t\t\t\t\t")
	fmt.Fprintln(w, "APP\tREADY\tNODES\tROUTES\tSLO\tVALID\t")
	for _, a := range st.Apps {
		valid := "?"
		if c := api.FindCondition(a.Status.Conditions, "Valid"); c != nil {
			valid = c.Status
		}
		fmt.Fprintf(w, "%s/%s\t%s\t%d\t%s\t%s\t%s\t\n", a.Metadata.Namespace, a.Metadata.Name, a.Status.Ready,
			a.Status.NodeCount, a.Status.RouteList, a.Status.SLOAttainment, valid)
		for _, f := range a.Status.Functions {
			var on []string
			for _, ni := range f.Nodes {
				on = append(on, fmt.Sprintf("%s=%d", ni.Node, ni.Instances))
			}
			fmt.Fprintf(w, "  %s\t%d/%d\t%s\t%s\t\t\t\n", f.Name, f.Ready, f.Desired, strings.Join(on, " "), f.Reason)
		}
	}
	return w.Flush()
}
