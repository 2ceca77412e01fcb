/*
Flotilla's hollow node: upstream kubemark's hollow kubelet (k8s.io/kubernetes
pkg/kubemark) with what running many of them on one host needs. Built by
scripts/k8s-modules.sh inside its wrapper module and installed as `kubemark`.

Differences from upstream's cmd/kubemark:
  - --node-cpu / --node-memory: the machine size the fake cadvisor reports
    (upstream: a fixed 1 core / 3.75 GiB);
  - --node-status-update-frequency (upstream: a fixed 10s);
  - the kubelet listens on loopback only and has no healthz port (upstream
    binds 0.0.0.0 and the fixed port 10248, which hollow nodes on one host
    would fight over);
  - its root directory and fake CRI socket live under TMPDIR, one per node
    (upstream: /tmp and a socket path shared by every node);
  - the fake image service, never the host's containerd;
  - only the kubelet morph (Flotilla runs no hollow proxy).

The sized fake cadvisor is in cadvisor_1.3X.go, one per signature of
cadvisor.Interface (it changed in 1.37); the build script copies the one
for the minor it builds.
*/
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel/trace/noop"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	clientset "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	cliflag "k8s.io/component-base/cli/flag"
	"k8s.io/component-base/version"
	"k8s.io/component-base/version/verflag"
	remote "k8s.io/cri-client/pkg"
	fakeremote "k8s.io/cri-client/pkg/fake"
	"k8s.io/klog/v2"
	cadvisortest "k8s.io/kubernetes/pkg/kubelet/cadvisor/testing"
	"k8s.io/kubernetes/pkg/kubelet/certificate/bootstrap"
	"k8s.io/kubernetes/pkg/kubelet/cm"
	"k8s.io/kubernetes/pkg/kubemark"
	utilflag "k8s.io/kubernetes/pkg/util/flag"
)

type config struct {
	kubeconfig          string
	bootstrapKubeconfig string
	certDir             string
	name                string
	morph               string
	kubeletPort         int
	readOnlyPort        int
	contentType         string
	qps                 float32
	burst               int
	nodeLabels          map[string]string
	taints              []v1.Taint
	maxPods             int
	nodeCPU             int
	nodeMemory          string
	statusFrequency     time.Duration
}

func main() {
	c := config{nodeLabels: map[string]string{}}
	fs := pflag.NewFlagSet("kubemark", pflag.ExitOnError)
	fs.StringVar(&c.kubeconfig, "kubeconfig", "kubelet.kubeconfig", "Path to the kubelet's kubeconfig.")
	fs.StringVar(&c.bootstrapKubeconfig, "bootstrap-kubeconfig", "", "Path to a bootstrap kubeconfig; when set, a client certificate is requested first.")
	fs.StringVar(&c.certDir, "cert-dir", ".", "Directory for the bootstrapped client certificate.")
	fs.StringVar(&c.name, "name", "fake-node", "Name of this hollow node.")
	fs.StringVar(&c.morph, "morph", "kubelet", "Only \"kubelet\" is supported.")
	fs.IntVar(&c.kubeletPort, "kubelet-port", 10250, "Port of the kubelet's API (loopback).")
	fs.IntVar(&c.readOnlyPort, "kubelet-read-only-port", 10255, "Read-only port of the kubelet (loopback); serves /healthz.")
	fs.StringVar(&c.contentType, "kube-api-content-type", "application/vnd.kubernetes.protobuf", "Content type of requests to the API server.")
	fs.Float32Var(&c.qps, "kube-api-qps", 10, "Requests per second to the API server.")
	fs.IntVar(&c.burst, "kube-api-burst", 20, "Burst of requests to the API server.")
	labels := cliflag.ConfigurationMap(c.nodeLabels)
	fs.Var(&labels, "node-labels", "Labels to register the node with (k=v,...).")
	fs.Var(utilflag.RegisterWithTaintsVar{Value: &c.taints}, "register-with-taints", "Taints to register the node with (k=v:Effect,...).")
	fs.IntVar(&c.maxPods, "max-pods", 110, "Pods this node accepts.")
	fs.IntVar(&c.nodeCPU, "node-cpu", 1, "CPU cores this node reports.")
	fs.StringVar(&c.nodeMemory, "node-memory", "3840Mi", "Memory this node reports, as a quantity.")
	fs.DurationVar(&c.statusFrequency, "node-status-update-frequency", 10*time.Second, "How often the kubelet computes node status; a change is posted at once.")
	klog.InitFlags(nil)
	fs.AddGoFlagSet(flag.CommandLine) // klog's -v and friends
	verflag.AddFlags(fs)
	if err := fs.Parse(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	verflag.PrintAndExitIfRequested()
	if err := run(context.Background(), &c); err != nil {
		klog.ErrorS(err, "hollow node failed")
		os.Exit(1)
	}
}

func run(ctx context.Context, c *config) error {
	klog.InfoS("hollow node", "version", version.Get().GitVersion, "name", c.name)
	if c.morph != "kubelet" {
		return fmt.Errorf("--morph=%s: only kubelet is supported", c.morph)
	}
	memory, err := resource.ParseQuantity(c.nodeMemory)
	if err != nil {
		return fmt.Errorf("--node-memory=%s: %w", c.nodeMemory, err)
	}
	if c.bootstrapKubeconfig != "" {
		if err := bootstrap.LoadClientCert(ctx, c.kubeconfig, c.bootstrapKubeconfig, c.certDir, types.NodeName(c.name)); err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
	}
	loaded, err := clientcmd.LoadFromFile(c.kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig %s: %w", c.kubeconfig, err)
	}
	clientConfig, err := clientcmd.NewDefaultClientConfig(*loaded, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return fmt.Errorf("kubeconfig %s: %w", c.kubeconfig, err)
	}
	clientConfig.ContentType = c.contentType
	clientConfig.QPS = c.qps
	clientConfig.Burst = c.burst
	clientConfig.UserAgent = "hollow-kubelet"
	client, err := clientset.NewForConfig(clientConfig)
	if err != nil {
		return err
	}

	f, kc := kubemark.GetHollowKubeletConfig(&kubemark.HollowKubeletOptions{
		NodeName:            c.name,
		KubeletPort:         c.kubeletPort,
		KubeletReadOnlyPort: c.readOnlyPort,
		MaxPods:             c.maxPods,
		NodeLabels:          c.nodeLabels,
		RegisterWithTaints:  c.taints,
	})
	// Upstream makes its directories under /tmp; move them under TMPDIR,
	// which the caller points at a directory of the node's own.
	if err := os.RemoveAll(f.RootDirectory); err != nil {
		return err
	}
	root, err := os.MkdirTemp("", "hollow-kubelet.")
	if err != nil {
		return err
	}
	f.RootDirectory = root
	kc.StaticPodPath = filepath.Join(root, "static-pods")
	kc.PodLogsDir = filepath.Join(root, "pod-logs")
	for _, dir := range []string{kc.StaticPodPath, kc.PodLogsDir} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	kc.Address = "127.0.0.1"
	kc.HealthzPort = 0
	kc.NodeStatusUpdateFrequency.Duration = c.statusFrequency
	// The kubelet refuses cgroup v1 hosts from 1.35 on unless told; a hollow
	// kubelet touches no cgroups at all.
	kc.FailCgroupV1 = false

	heartbeatConfig := *clientConfig
	heartbeatConfig.Timeout = kc.NodeStatusUpdateFrequency.Duration
	if lease := time.Duration(kc.NodeLeaseDurationSeconds) * time.Second; heartbeatConfig.Timeout > lease {
		heartbeatConfig.Timeout = lease
	}
	heartbeatConfig.QPS = -1
	heartbeatClient, err := clientset.NewForConfig(&heartbeatConfig)
	if err != nil {
		return err
	}

	endpoint := "unix://" + filepath.Join(root, "cri.sock")
	fakeRuntime := fakeremote.NewFakeRemoteRuntime()
	if err := fakeRuntime.Start(endpoint); err != nil {
		return fmt.Errorf("fake runtime on %s: %w", endpoint, err)
	}
	defer fakeRuntime.Stop()
	// The deprecated constructor: the builder that replaces it is new in 1.37.
	runtimeService, err := remote.NewRemoteRuntimeService(ctx, endpoint, 15*time.Second, noop.NewTracerProvider(), false)
	if err != nil {
		return fmt.Errorf("runtime service: %w", err)
	}

	cadvisor := &sizedCadvisor{
		Fake:   &cadvisortest.Fake{NodeName: c.name},
		cores:  c.nodeCPU,
		memory: uint64(memory.Value()),
	}
	kubemark.NewHollowKubelet(
		f, kc, client, heartbeatClient, cadvisor,
		fakeRuntime.ImageService, runtimeService, cm.NewStubContainerManager(),
	).Run(ctx)
	return nil
}
