package controller

import (
	"encoding/json"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/spry-dev/spry/internal/cluster/api"
)

// GroupVersion is spry.dev/v1alpha1.
var GroupVersion = schema.GroupVersion{Group: api.Group, Version: api.Version}

// SpryApp, SpryNode and SpryAssignment are the api types as Kubernetes
// objects, for controller-runtime's client and cache.
type (
	SpryApp struct {
		metav1.TypeMeta   `json:",inline"`
		metav1.ObjectMeta `json:"metadata,omitempty"`
		Spec              json.RawMessage `json:"spec,omitempty"`
		Status            api.AppStatus   `json:"status,omitempty"`
	}
	SpryAppList struct {
		metav1.TypeMeta `json:",inline"`
		metav1.ListMeta `json:"metadata,omitempty"`
		Items           []SpryApp `json:"items"`
	}
	SpryNode struct {
		metav1.TypeMeta   `json:",inline"`
		metav1.ObjectMeta `json:"metadata,omitempty"`
		Spec              api.NodeSpec   `json:"spec"`
		Status            api.NodeStatus `json:"status,omitempty"`
	}
	SpryNodeList struct {
		metav1.TypeMeta `json:",inline"`
		metav1.ListMeta `json:"metadata,omitempty"`
		Items           []SpryNode `json:"items"`
	}
	SpryAssignment struct {
		metav1.TypeMeta   `json:",inline"`
		metav1.ObjectMeta `json:"metadata,omitempty"`
		Spec              api.AssignmentSpec `json:"spec,omitempty"`
	}
	SpryAssignmentList struct {
		metav1.TypeMeta `json:",inline"`
		metav1.ListMeta `json:"metadata,omitempty"`
		Items           []SpryAssignment `json:"items"`
	}
)

// AddToScheme registers the types.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &SpryApp{}, &SpryAppList{}, &SpryNode{}, &SpryNodeList{},
		&SpryAssignment{}, &SpryAssignmentList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}

// deepCopy copies spec and status through JSON: they are small, plain
// data, and this cannot miss a field added later.
func deepCopy[T any](in T) T {
	var out T
	b, err := json.Marshal(in)
	if err == nil {
		err = json.Unmarshal(b, &out)
	}
	if err != nil {
		panic("cluster: deep copy: " + err.Error())
	}
	return out
}

func (in *SpryApp) DeepCopyObject() runtime.Object {
	out := &SpryApp{TypeMeta: in.TypeMeta, Spec: append(json.RawMessage(nil), in.Spec...), Status: deepCopy(in.Status)}
	in.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	return out
}

func (in *SpryNode) DeepCopyObject() runtime.Object {
	out := &SpryNode{TypeMeta: in.TypeMeta, Spec: in.Spec, Status: deepCopy(in.Status)}
	in.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	return out
}

func (in *SpryAssignment) DeepCopyObject() runtime.Object {
	out := &SpryAssignment{TypeMeta: in.TypeMeta, Spec: deepCopy(in.Spec)}
	in.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	return out
}

func (in *SpryAppList) DeepCopyObject() runtime.Object {
	out := &SpryAppList{TypeMeta: in.TypeMeta, Items: make([]SpryApp, len(in.Items))}
	in.ListMeta.DeepCopyInto(&out.ListMeta)
	for i := range in.Items {
		out.Items[i] = *in.Items[i].DeepCopyObject().(*SpryApp)
	}
	return out
}

func (in *SpryNodeList) DeepCopyObject() runtime.Object {
	out := &SpryNodeList{TypeMeta: in.TypeMeta, Items: make([]SpryNode, len(in.Items))}
	in.ListMeta.DeepCopyInto(&out.ListMeta)
	for i := range in.Items {
		out.Items[i] = *in.Items[i].DeepCopyObject().(*SpryNode)
	}
	return out
}

func (in *SpryAssignmentList) DeepCopyObject() runtime.Object {
	out := &SpryAssignmentList{TypeMeta: in.TypeMeta, Items: make([]SpryAssignment, len(in.Items))}
	in.ListMeta.DeepCopyInto(&out.ListMeta)
	for i := range in.Items {
		out.Items[i] = *in.Items[i].DeepCopyObject().(*SpryAssignment)
	}
	return out
}
