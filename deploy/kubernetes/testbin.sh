#!/usr/bin/env bash
# Builds the Kubernetes control-plane binaries that Spry's cluster tests run
# against (kube-apiserver, kubectl, etcd) from source, through the Go module
# proxy alone, into a cache; prints the directory that holds them. Usage:
#
#	dir=$(deploy/kubernetes/testbin.sh)      # ~6.5 min cold on 2 cores, instant after
#	KUBEBUILDER_ASSETS=$dir go test ./internal/cluster/...
#
# Needs: Go and the module proxy. Nothing is downloaded from anywhere else.
# Kubernetes publishes k8s.io/kubernetes with its staging modules replaced by
# local paths; the wrapper module here replaces each with its published
# k8s.io/* module at the matching v0.x version, which is all the build needs.
# etcd's binary is built from go.etcd.io/etcd/server/v3's etcdmain.
#
# The cache is $SPRY_K8S_CACHE (default ~/.cache/spry/k8s-$K8S_VERSION).
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
STAGING_VERSION=${STAGING_VERSION:-v0.${K8S_VERSION#v1.}}
ETCD_VERSION=${ETCD_VERSION:-v3.7.0}
out=${SPRY_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spry/k8s-$K8S_VERSION}

if [ -x "$out/kube-apiserver" ] && [ -x "$out/kubectl" ] && [ -x "$out/etcd" ]; then
	echo "$out"
	exit 0
fi
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0

# kube-apiserver and kubectl.
mkdir -p "$work/k8s"
cd "$work/k8s"
go mod init spry.local/k8s-testbin >/dev/null 2>&1
go mod edit -require="k8s.io/kubernetes@$K8S_VERSION"
gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\s*"GoMod": "\(.*\)",$/\1/p')
# Every staging module k8s.io/kubernetes replaces with a local path.
for m in $(sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\1#p' "$gomod"); do
	go mod edit -replace="$m=$m@$STAGING_VERSION"
done
cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
go mod tidy >&2
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags="$ldflags -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2)"
done
go build -trimpath -ldflags="$ldflags" -o "$out/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver >&2
go build -trimpath -ldflags="$ldflags" -o "$out/kubectl.tmp" k8s.io/kubernetes/cmd/kubectl >&2

# etcd, from its server module (its root module is only a main around etcdmain).
mkdir -p "$work/etcd"
cd "$work/etcd"
go mod init spry.local/etcd-testbin >/dev/null 2>&1
cat >main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
go mod edit -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION"
go mod tidy >&2
go build -trimpath -ldflags="-s -w" -o "$out/etcd.tmp" . >&2

for b in kube-apiserver kubectl etcd; do mv "$out/$b.tmp" "$out/$b"; done
echo "$out"
