// Package cli holds coffer's command-line verbs: thin cobra commands that
// parse flags, call the libraries and print.
package cli

import (
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"

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
		newVerifyCmd(),
		newSignCmd(),
		newDemoCmd(),
		kbsCmd,
		newAgentCmd(),
		newKeyproviderCmd(),
		newTPMCmd(),
		newWPMCmd(),
		newWLSCmd(),
		newWLACmd(),
		newCtdDecoderCmd(),
		newRuntimeCmd(),
		newVMCmd(),
	)
	return root
}

// Version is set at build time with -ldflags "-X github.com/coffer-dev/coffer/internal/cli.Version=…";
// otherwise the module version and VCS stamp Go records in the binary are used.
var (
	Version = ""
	Commit  = "" // -X …/internal/cli.Commit=…, else the VCS stamp
)

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print coffer's version, commit and Go version",
		Args:  cobra.NoArgs,
		Run:   func(cmd *cobra.Command, _ []string) { cmd.Println(versionString()) },
	}
}

// versionString is "coffer VERSION (commit REV[+dirty], TIME) GOVERSION".
func versionString() string {
	v, rev, at, dirty, gov := Version, Commit, "", "", runtime.Version()
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if rev == "" {
					rev = s.Value
				}
			case "vcs.time":
				at = ", " + s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "+dirty"
				}
			}
		}
	}
	if v == "" {
		v = "(devel)"
	}
	if rev == "" {
		rev = "unknown"
	}
	return fmt.Sprintf("coffer %s (commit %s%s%s) %s", v, rev, dirty, at, gov)
}
