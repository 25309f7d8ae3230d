// Package kubernetes holds Spry's Kubernetes manifests; CRDs embeds the
// custom resource definitions for the programs that install them
// themselves (spry-controller local).
package kubernetes

import _ "embed"

// CRDs is crds.yaml: SpryApp, SpryNode, SpryAssignment.
//
//go:embed crds.yaml
var CRDs []byte
