package shim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/contrib/snapshotservice"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/native"
	"google.golang.org/grpc"
)

// SnapshotterName is the name containerd knows the coffer snapshotter by
// (a proxy plugin: [proxy_plugins.coffer] type = "snapshot").
const SnapshotterName = "coffer"

// labelTargetRef is the label containerd's unpacker puts on the snapshot
// it prepares for an image layer: the chain ID the layer would commit to.
const labelTargetRef = "containerd.io/snapshot.ref"

// remote is a snapshotter for guest pull: every image layer is "remote"
// (the guest pulls it), so a layer's Prepare records an empty committed
// snapshot under the target chain ID and answers AlreadyExists, which
// tells containerd's unpacker the layer is there without fetching it. A
// container's own snapshot is an empty directory: the shim does not use
// the host's rootfs.
type remote struct{ snapshots.Snapshotter }

// NewSnapshotter returns the guest-pull snapshotter over containerd's
// native snapshotter in root.
func NewSnapshotter(root string) (snapshots.Snapshotter, error) {
	sn, err := native.NewSnapshotter(root)
	if err != nil {
		return nil, err
	}
	return remote{sn}, nil
}

func (r remote) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	var base snapshots.Info
	for _, o := range opts {
		if err := o(&base); err != nil {
			return nil, err
		}
	}
	target := base.Labels[labelTargetRef]
	if target == "" {
		return r.Snapshotter.Prepare(ctx, key, parent, opts...)
	}
	if _, err := r.Snapshotter.Prepare(ctx, key, parent, opts...); err != nil {
		return nil, err
	}
	if err := r.Snapshotter.Commit(ctx, "remote:"+key, key, snapshots.WithLabels(base.Labels)); err != nil {
		_ = r.Snapshotter.Remove(ctx, key)
		return nil, err
	}
	return nil, fmt.Errorf("layer %s is pulled by the guest: %w", target, errdefs.ErrAlreadyExists)
}

// ServeSnapshotter serves the guest-pull snapshotter's gRPC API on a unix
// socket (made 0600) until ctx ends.
func ServeSnapshotter(ctx context.Context, socket, root string, ready func()) error {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return err
	}
	sn, err := NewSnapshotter(root)
	if err != nil {
		return err
	}
	defer sn.Close()
	if err := os.MkdirAll(filepath.Dir(socket), 0o700); err != nil {
		return err
	}
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	old := umask(0o177)
	l, err := net.Listen("unix", socket)
	umask(old)
	if err != nil {
		return err
	}
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(maxSpec))
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))
	stop := context.AfterFunc(ctx, srv.GracefulStop)
	defer stop()
	if ready != nil {
		ready()
	}
	if err := srv.Serve(l); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}
