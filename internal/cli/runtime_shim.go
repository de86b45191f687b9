package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/coffer-dev/coffer/runtime/nodecfg"
	"github.com/coffer-dev/coffer/runtime/shim"
)

// Defaults of the guest-pull snapshotter.
const (
	defaultSnapshotterSocket = nodecfg.DefaultSnapshotterSocket
	defaultSnapshotterRoot   = "/var/lib/coffer/snapshotter"
)

func newRuntimeSnapshotterCmd() *cobra.Command {
	var socket, root string
	cmd := &cobra.Command{
		Use:   "snapshotter [--socket PATH] [--root DIR]",
		Short: "Serve the guest-pull snapshotter containerd uses with the io.containerd.coffer.v2 runtime",
		Long: `Serve containerd's snapshot API on a unix socket (0600) for the coffer
runtime's guest pull: image layers are recorded as already present
("remote"), so containerd neither fetches nor unpacks them; the pod's guest
pulls, decrypts and verifies them itself. Configure it in containerd as
[proxy_plugins.coffer] type = "snapshot", address = SOCKET (coffer runtime
install containerd --shim writes it) and pull with --snapshotter coffer.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return shim.ServeSnapshotter(cmd.Context(), socket, root, func() {
				fmt.Fprintf(cmd.OutOrStdout(), "serving the %s snapshotter on %s\n", shim.SnapshotterName, socket)
			})
		},
	}
	cmd.Flags().StringVar(&socket, "socket", defaultSnapshotterSocket, "unix socket to serve on (made 0600)")
	cmd.Flags().StringVar(&root, "root", defaultSnapshotterRoot, "the snapshotter's directory (empty snapshots and their metadata)")
	return cmd
}

func newRuntimePullCmd() *cobra.Command {
	var address, namespace, snapshotter string
	var plainHTTP bool
	cmd := &cobra.Command{
		Use:   "pull [--address SOCK] [--namespace NS] IMAGE",
		Short: "Record an image in containerd for the coffer runtime's guest pull, fetching no layer",
		Long: `Fetch IMAGE's manifest and config into containerd and unpack it with the
coffer snapshotter, which answers every layer as present: the host fetches
no layer and holds no plaintext; the pod's guest pulls, decrypts and
verifies the layers itself. containerd's CRI plugin does the same on a
guest-pull node; ctr's own image pull does not ask the snapshotter about
remote layers (containerd 1.6), so use this with ctr, then
  ctr run --snapshotter coffer --runtime io.containerd.coffer.v2 IMAGE ID`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := []shim.PullOption{shim.WithNamespace(namespace), shim.WithPullSnapshotter(snapshotter)}
			if plainHTTP {
				opts = append(opts, shim.WithPlainHTTPLoopback())
			}
			p, err := shim.Pull(cmd.Context(), address, args[0], opts...)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s (layers left to the guest)\n", p.Name, p.Digest)
			return nil
		},
	}
	cmd.Flags().StringVar(&address, "address", nodecfg.DefaultContainerdSocket, "containerd's socket")
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "default", "containerd namespace")
	cmd.Flags().StringVar(&snapshotter, "snapshotter", shim.SnapshotterName, "the guest-pull snapshotter's name in containerd")
	cmd.Flags().BoolVar(&plainHTTP, "plain-http", false, "reach registries on the loopback (localhost, 127.0.0.1) over plain http")
	return cmd
}
