// Package cli holds coffer's command-line verbs: thin cobra commands that
// parse flags, call the libraries and print.
package cli

import (
	"log/slog"

	"github.com/spf13/cobra"
)

// NewRoot builds the coffer command tree.
func NewRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "coffer",
		Short:         "Confidential container images: encrypt, broker keys, attest, pull",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	var verbose bool
	root.PersistentFlags().BoolVarP(&verbose, "verbose", "v", false, "log progress to stderr (default: warnings and errors only)")
	root.PersistentPreRun = func(cmd *cobra.Command, _ []string) {
		level := slog.LevelWarn
		if verbose {
			level = slog.LevelInfo
		}
		slog.SetDefault(slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level})))
	}
	kbsCmd := newKBSCmd()
	kbsCmd.AddCommand(newKBSClientCmds()...)
	kbsCmd.AddCommand(newKBSAdminTokenCmd())
	root.AddCommand(
		// registered verbs (one line each; keep this list, add yours):
		newVersionCmd(),
		newEncryptCmd(),
		newDecryptCmd(),
		newRekeyCmd(),
		newInspectCmd(),
		newPullCmd(),
		newDemoCmd(),
		kbsCmd,
		newAgentCmd(),
		newKeyproviderCmd(),
	)
	return root
}

// Version is set at build time with -ldflags "-X github.com/coffer-dev/coffer/internal/cli.Version=…".
var Version = "dev"

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print coffer's version",
		Args:  cobra.NoArgs,
		Run:   func(cmd *cobra.Command, _ []string) { cmd.Println(Version) },
	}
}
