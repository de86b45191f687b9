package shim

import (
	"context"
	"fmt"

	containerd "github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/remotes/docker"

	"github.com/coffer-dev/coffer/spec"
)

// Pulled is what Pull recorded in containerd.
type Pulled struct {
	Name, Digest string
}

type pullOptions struct {
	namespace, snapshotter string
	plainHTTP              func(host string) (bool, error)
}

// PullOption configures Pull.
type PullOption func(*pullOptions)

// WithNamespace names the containerd namespace (default "default").
func WithNamespace(ns string) PullOption { return func(o *pullOptions) { o.namespace = ns } }

// WithPullSnapshotter names the snapshotter (default SnapshotterName).
func WithPullSnapshotter(name string) PullOption {
	return func(o *pullOptions) { o.snapshotter = name }
}

// WithPlainHTTPLoopback lets Pull reach registries on the host's loopback
// (localhost, 127.0.0.1, ::1) over plain http; others stay https.
func WithPlainHTTPLoopback() PullOption {
	return func(o *pullOptions) { o.plainHTTP = docker.MatchLocalhost }
}

// Pull records ref in containerd (address: its socket) for the coffer
// runtime, as containerd's CRI plugin does on a guest-pull node: the
// manifest and config are fetched and the image is unpacked with the
// coffer snapshotter, which answers every layer as present, so no layer
// is fetched or unpacked on the host (the guest pulls them). ctr's own
// `image pull` unpacks without asking the snapshotter about remote
// layers (containerd 1.6), so with ctr use this (as stargz's `ctr-remote
// image rpull`), then `ctr run --snapshotter coffer --runtime
// io.containerd.coffer.v2`.
func Pull(ctx context.Context, address, ref string, opts ...PullOption) (*Pulled, error) {
	o := pullOptions{namespace: "default", snapshotter: SnapshotterName}
	for _, f := range opts {
		f(&o)
	}
	client, err := containerd.New(address)
	if err != nil {
		return nil, fmt.Errorf("containerd at %s: %w", address, err)
	}
	defer client.Close()
	ctx = namespaces.WithNamespace(ctx, o.namespace)
	var ropts []docker.RegistryOpt
	if o.plainHTTP != nil {
		ropts = append(ropts, docker.WithPlainHTTP(o.plainHTTP))
	}
	resolver := docker.NewResolver(docker.ResolverOptions{Hosts: docker.ConfigureDefaultRegistries(ropts...)})
	img, err := client.Pull(ctx, ref, containerd.WithResolver(resolver), containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(o.snapshotter))
	if err != nil {
		return nil, fmt.Errorf("pulling %s for guest pull: %w", ref, err)
	}
	if img.Name() == "" {
		return nil, fmt.Errorf("pulling %s: no image recorded: %w", ref, spec.ErrNotFound)
	}
	return &Pulled{Name: img.Name(), Digest: img.Target().Digest.String()}, nil
}
