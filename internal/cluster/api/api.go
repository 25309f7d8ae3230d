// Package api holds Spry's cluster resources (group spry.dev, version
// v1alpha1) as plain Go types with their JSON shape — SpryApp, SpryNode,
// SpryAssignment — and the Lease fields agents use. It imports nothing
// from Kubernetes, so the node agent (`spry up --cluster`) and the CLI
// speak the API without client-go in their binary; the controller wraps
// the same spec and status types in Kubernetes objects
// (internal/cluster/controller). The CRDs are deploy/kubernetes/crds.yaml.
package api

import (
	"encoding/json"
	"time"
)

// Group and version of Spry's custom resources.
const (
	Group      = "spry.dev"
	Version    = "v1alpha1"
	APIVersion = Group + "/" + Version
)

// LeaseName is the name of a node agent's lease (coordination.k8s.io/v1,
// in the agents' namespace): the node is up while it is renewed.
func LeaseName(node string) string { return "spry-node-" + node }

// ObjectMeta is the part of Kubernetes' object metadata Spry uses.
type ObjectMeta struct {
	Name              string            `json:"name,omitempty"`
	Namespace         string            `json:"namespace,omitempty"`
	UID               string            `json:"uid,omitempty"`
	ResourceVersion   string            `json:"resourceVersion,omitempty"`
	Generation        int64             `json:"generation,omitempty"`
	CreationTimestamp *time.Time        `json:"creationTimestamp,omitempty"`
	Labels            map[string]string `json:"labels,omitempty"`
}

// TypeMeta is an object's apiVersion and kind.
type TypeMeta struct {
	APIVersion string `json:"apiVersion,omitempty"`
	Kind       string `json:"kind,omitempty"`
}

// SpryApp is one app on the cluster. Its spec is the app's spry.yaml, as
// is: the same file deploys to one node (`spry up -f`) or a cluster
// (`spry deploy -f`).
type SpryApp struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta      `json:"metadata"`
	Spec     json.RawMessage `json:"spec,omitempty"`
	Status   AppStatus       `json:"status,omitempty"`
}

// AppStatus is what the controller reports about an app.
type AppStatus struct {
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Ready is "ready/wanted" instances over all functions, for kubectl get.
	Ready     string           `json:"ready,omitempty"`
	NodeCount int32            `json:"nodeCount,omitempty"`
	Routes    []string         `json:"routes,omitempty"`
	RouteList string           `json:"routeList,omitempty"` // Routes joined, for kubectl get
	Functions []FunctionStatus `json:"functions,omitempty"`
	// SLOAttainment is the share of the requests served since the nodes'
	// agents started whose step met its SLO, e.g. "99.2%".
	SLOAttainment string      `json:"sloAttainment,omitempty"`
	Conditions    []Condition `json:"conditions,omitempty"`
}

// Condition is a status condition (the shape of Kubernetes' own).
type Condition struct {
	Type               string    `json:"type"`
	Status             string    `json:"status"` // "True", "False", "Unknown"
	ObservedGeneration int64     `json:"observedGeneration,omitempty"`
	LastTransitionTime time.Time `json:"lastTransitionTime"`
	Reason             string    `json:"reason"`
	Message            string    `json:"message"`
}

// SetCondition sets c in cs, keeping LastTransitionTime when the status
// did not change.
func SetCondition(cs []Condition, c Condition, now time.Time) []Condition {
	for i := range cs {
		if cs[i].Type == c.Type {
			if cs[i].Status == c.Status {
				c.LastTransitionTime = cs[i].LastTransitionTime
			} else {
				c.LastTransitionTime = now
			}
			cs[i] = c
			return cs
		}
	}
	c.LastTransitionTime = now
	return append(cs, c)
}

// FindCondition returns the condition of that type, or nil.
func FindCondition(cs []Condition, typ string) *Condition {
	for i := range cs {
		if cs[i].Type == typ {
			return &cs[i]
		}
	}
	return nil
}

// FunctionStatus is one function's instances, cluster-wide.
type FunctionStatus struct {
	Name      string          `json:"name"`
	Desired   int32           `json:"desired"`
	Placed    int32           `json:"placed"`
	Ready     int32           `json:"ready"`
	Nodes     []NodeInstances `json:"nodes,omitempty"`
	Predicted string          `json:"predictedRPS,omitempty"`
	Reason    string          `json:"reason,omitempty"`
}

// NodeInstances is a number of instances on a node.
type NodeInstances struct {
	Node      string `json:"node"`
	Instances int32  `json:"instances"`
}

// SpryNode is a node agent: registered by the agent (spec: where its
// gateway answers, what it offers), with the per-function counters of its
// last heartbeat in status.
type SpryNode struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta `json:"metadata"`
	Spec     NodeSpec   `json:"spec"`
	Status   NodeStatus `json:"status,omitempty"`
}

// NodeSpec is what an agent registers.
type NodeSpec struct {
	// Gateway is the address clients and other nodes reach its gateway at.
	Gateway string `json:"gateway,omitempty"`
	// Peer is the address of its node-to-node listener (cross-node hops).
	Peer string `json:"peer,omitempty"`
	// Capacity is what the node offers function instances.
	Capacity Capacity `json:"capacity"`
}

// Capacity is CPU in millicores and memory in bytes.
type Capacity struct {
	CPUMillis   int64 `json:"cpuMillis"`
	MemoryBytes int64 `json:"memoryBytes"`
}

// NodeStatus carries the agent's heartbeat: per-function counters since
// the agent started (cumulative: the controller takes deltas) and gauges.
type NodeStatus struct {
	Heartbeat *time.Time `json:"heartbeat,omitempty"`
	// Boot identifies the agent's run; counters restart with it.
	Boot      string           `json:"boot,omitempty"`
	Functions []FunctionCounts `json:"functions,omitempty"`
}

// FunctionCounts is one function's counters on one node.
type FunctionCounts struct {
	App         string `json:"app"` // namespace/name
	Function    string `json:"function"`
	Arrivals    uint64 `json:"arrivals"`
	Completions uint64 `json:"completions"`
	BusyNanos   uint64 `json:"busyNanos"`
	SLOMet      uint64 `json:"sloMet,omitempty"`
	Queued      int32  `json:"queued"`
	InFlight    int32  `json:"inFlight"`
	Ready       int32  `json:"ready"`
	Starting    int32  `json:"starting"`
}

// SpryAssignment is what one node runs, written by the controller (named
// after the node) and reconciled by that node's agent. It carries each
// app's spec so that an agent reads nothing but its own assignment.
type SpryAssignment struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta     `json:"metadata"`
	Spec     AssignmentSpec `json:"spec,omitempty"`
}

// AssignmentSpec lists the apps a node runs and the instances of each
// function there.
type AssignmentSpec struct {
	Apps []AssignedApp `json:"apps,omitempty"`
	// Peers are the nodes that are up and their peer addresses, for
	// cross-node hops.
	Peers []Peer `json:"peers,omitempty"`
}

// AssignedApp is one app on a node. Every node gets every app, so that
// any node's gateway serves any app's routes, with the instances of each
// function that run there (perhaps none).
type AssignedApp struct {
	Name       string          `json:"name"` // namespace/name
	Generation int64           `json:"generation"`
	Spec       json.RawMessage `json:"spec"`
	Instances  []Instances     `json:"instances,omitempty"`
	// Placement is where the app's functions run on the cluster: a step
	// with no instance on this node goes to the nodes that run it.
	Placement []FunctionPlacement `json:"placement,omitempty"`
}

// FunctionPlacement is the nodes that run a function, and how many
// instances each.
type FunctionPlacement struct {
	Function string          `json:"function"`
	Nodes    []NodeInstances `json:"nodes"`
}

// Instances is a function's instance count on the node.
type Instances struct {
	Function string `json:"function"`
	N        int32  `json:"count"`
}

// Peer is another node.
type Peer struct {
	Node    string `json:"node"`
	Address string `json:"address"`
}

// Lease is the part of a coordination.k8s.io/v1 Lease agents use.
type Lease struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta `json:"metadata"`
	Spec     LeaseSpec  `json:"spec"`
}

// LeaseSpec: RenewTime in microseconds (Kubernetes' MicroTime).
type LeaseSpec struct {
	HolderIdentity       *string    `json:"holderIdentity,omitempty"`
	LeaseDurationSeconds *int32     `json:"leaseDurationSeconds,omitempty"`
	RenewTime            *MicroTime `json:"renewTime,omitempty"`
}

// MicroTime is a time with microseconds in JSON, as Kubernetes writes it.
type MicroTime struct{ time.Time }

const microFormat = "2006-01-02T15:04:05.000000Z07:00"

// MarshalJSON writes RFC 3339 with microseconds, in UTC.
func (t MicroTime) MarshalJSON() ([]byte, error) {
	return json.Marshal(t.UTC().Format(microFormat))
}

// UnmarshalJSON reads RFC 3339 with or without fractions.
func (t *MicroTime) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.Parse(time.RFC3339Nano, s)
	t.Time = v
	return err
}

// Fresh reports whether a lease was renewed within its duration (10 s if
// it names none) before now.
func (l *Lease) Fresh(now time.Time) bool {
	e := l.Expires()
	return !e.IsZero() && now.Before(e)
}

// Expires returns when a lease runs out: its renewal plus its duration
// (10 s if it names none); zero if it was never renewed.
func (l *Lease) Expires() time.Time {
	if l == nil || l.Spec.RenewTime == nil {
		return time.Time{}
	}
	d := 10 * time.Second
	if l.Spec.LeaseDurationSeconds != nil {
		d = time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
	}
	return l.Spec.RenewTime.Add(d)
}
