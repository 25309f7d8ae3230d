package controller

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// One real control plane (kube-apiserver + etcd, built by
// deploy/kubernetes/testbin.sh) for the whole test binary: it takes ~3 s
// to start, and the apiserver waits 2 s on the first create after a CRD is
// established.
var (
	testEnv    *envtest.Environment
	testCfg    *rest.Config
	testClient client.Client
	testAssets string // directory with kube-apiserver, etcd, kubectl
	skipK8s    string // why the control-plane tests skip, if they do
)

// assets returns the directory holding the control-plane binaries, or "".
func assets() string {
	if d := os.Getenv("KUBEBUILDER_ASSETS"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		base = filepath.Join(home, ".cache")
	}
	d := filepath.Join(base, "spry", "k8s-v1.37.2")
	for _, b := range []string{"kube-apiserver", "etcd", "kubectl"} {
		if _, err := os.Stat(filepath.Join(d, b)); err != nil {
			return ""
		}
	}
	return d
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	testAssets = assets()
	if testAssets == "" {
		skipK8s = "no kube-apiserver/etcd/kubectl: run deploy/kubernetes/testbin.sh (or set KUBEBUILDER_ASSETS)"
		return m.Run()
	}
	testEnv = &envtest.Environment{
		BinaryAssetsDirectory: testAssets,
		ErrorIfCRDPathMissing: true,
		CRDInstallOptions:     envtest.CRDInstallOptions{Paths: []string{"../../../deploy/kubernetes/crds.yaml"}, ErrorIfPathMissing: true},
		Scheme:                Scheme(),
	}
	if os.Getenv("KUBEBUILDER_CONTROLPLANE_START_TIMEOUT") == "" {
		// envtest's 20 s per component is not a hang bound on a busy
		// machine: etcd did not start in it, 5 tries, at load 80.
		testEnv.ControlPlaneStartTimeout = 2 * time.Minute
	}
	var err error
	if testCfg, err = testEnv.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "envtest:", err)
		if os.Getenv("SPRY_REQUIRE_K8S") == "1" {
			return 1
		}
		skipK8s = "envtest did not start: " + err.Error()
		return m.Run()
	}
	defer testEnv.Stop()
	scheme := Scheme()
	_ = corev1.AddToScheme(scheme) // namespaces, for the tests
	if testClient, err = client.New(testCfg, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		return 1
	}
	return m.Run()
}

// needK8s skips (or, with SPRY_REQUIRE_K8S=1, fails) a test without a
// control plane.
func needK8s(t *testing.T) {
	t.Helper()
	if skipK8s == "" {
		return
	}
	if os.Getenv("SPRY_REQUIRE_K8S") == "1" {
		t.Fatal("SPRY_REQUIRE_K8S=1: " + skipK8s)
	}
	t.Skip(skipK8s)
}
