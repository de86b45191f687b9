package shim

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"

	containersapi "github.com/containerd/containerd/api/services/containers/v1"
	"github.com/containerd/containerd/namespaces"
	runtimeoptions "github.com/containerd/containerd/pkg/runtimeoptions/v1"
	"github.com/containerd/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/coffer-dev/coffer/spec"
)

func logf(ctx context.Context, format string, a ...any) {
	log.G(ctx).Warnf(format, a...)
}

// optionsConfigPath returns the ConfigPath of containerd's generic
// runtime options (pkg/runtimeoptions/v1), which CRI sends for a runtime
// that is not runc and ctr run for --runtime-config-path.
func optionsConfigPath(a *anypb.Any) (string, error) {
	if a == nil || !strings.HasSuffix(a.GetTypeUrl(), "runtimeoptions.v1.Options") {
		return "", nil
	}
	if len(a.GetValue()) > maxConfig {
		return "", fmt.Errorf("coffer shim: runtime options of %d bytes: %w", len(a.GetValue()), spec.ErrUnsupported)
	}
	var o runtimeoptions.Options
	if err := proto.Unmarshal(a.GetValue(), &o); err != nil {
		return "", fmt.Errorf("coffer shim: runtime options: %v: %w", err, spec.ErrUnsupported)
	}
	return o.ConfigPath, nil
}

// containerdAddressEnv carries containerd's gRPC address from the shim's
// start to the shim it serves from.
const containerdAddressEnv = "COFFER_SHIM_CONTAINERD"

// containerImage asks containerd which image a container was made from.
func containerImage(ctx context.Context, id string) (string, error) {
	addr := os.Getenv(containerdAddressEnv)
	ns, _ := namespaces.Namespace(ctx)
	if addr == "" || ns == "" {
		return "", fmt.Errorf("container %s: no image annotation (%s) and no containerd address to ask: %w", id, AnnotationImageName, spec.ErrNotFound)
	}
	conn, err := grpc.NewClient("unix://"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxSpec)))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	ctx = metadata.AppendToOutgoingContext(ctx, namespaces.GRPCHeader, ns)
	c, err := containersapi.NewContainersClient(conn).Get(ctx, &containersapi.GetContainerRequest{ID: id})
	if err != nil {
		return "", fmt.Errorf("asking containerd for container %s's image: %w", id, err)
	}
	if c.Container.Image == "" {
		return "", fmt.Errorf("container %s was made from no image: %w", id, spec.ErrNotFound)
	}
	return c.Container.Image, nil
}

func umask(m int) int { return syscall.Umask(m) }
