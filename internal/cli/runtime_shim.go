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
