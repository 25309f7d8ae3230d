# Kubernetes control plane for the cluster tests (internal/cluster,
# deploy/kubernetes): kube-apiserver, kubectl and etcd built from source
# through the Go module proxy (cached; ~6.5 min cold on 2 cores), and
# iproute2 for the multi-node tests in network namespaces.
if ! command -v ip >/dev/null 2>&1; then
	apt-get update -qq && apt-get install -y -qq iproute2 >/dev/null
fi
KUBEBUILDER_ASSETS=$(deploy/kubernetes/testbin.sh)
export KUBEBUILDER_ASSETS
export SPRY_REQUIRE_K8S=1
