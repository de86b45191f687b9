// Package cli holds coffer's command-line verbs: thin cobra commands that
// parse flags, call the libraries and print.
package cli

import (
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"strings"

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
	addTrustFlags(root)
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		level := slog.LevelWarn
		if verbose {
			level = slog.LevelInfo
		}
		slog.SetDefault(slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level})))
		return withTrust(cmd)
	}
	kbsCmd := newKBSCmd()
	kbsCmd.AddCommand(newKBSClientCmds()...)
	kbsCmd.AddCommand(newKBSAdminTokenCmd())
	addKBSClientFlags(kbsCmd) // after every kbs verb
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
		newKeygenCmd(),
		newSecretCmd(),
		newVMCmd(),
	)
	root.Long = root.Short + "\n\n" + exitCodesHelp()
	root.Version = versionString() // --version
	root.SetVersionTemplate("{{.Version}}\n")
	usageErrors(root)
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
	bi, _ := debug.ReadBuildInfo()
	return formatVersion(Version, Commit, bi)
}

// formatVersion renders the version from the -ldflags stamps, falling back
// to what Go recorded in the binary: the module version (`go install
// …@v1.2.3` or a pseudo-version), vcs.revision/vcs.time/vcs.modified (plain
// `go build` in a clone). A pseudo-version carries its commit's prefix.
func formatVersion(v, rev string, bi *debug.BuildInfo) string {
	at, dirty, gov := "", "", runtime.Version()
	if bi != nil {
		if v == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
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
	if rev == "" {
		rev = pseudoVersionRev(v)
	}
	if v == "" {
		v = "(devel)"
	}
	if rev == "" {
		if v != "(devel)" { // a tagged module install: the tag names the commit
			return fmt.Sprintf("coffer %s %s", v, gov)
		}
		rev = "unknown (build with make build, or go build in a git clone)"
	}
	return fmt.Sprintf("coffer %s (commit %s%s%s) %s", v, rev, dirty, at, gov)
}

// pseudoVersionRev is the 12-hex commit prefix of a Go pseudo-version
// (v0.0.0-20261207015033-e5be0ba83651[+incompatible]), else "".
func pseudoVersionRev(v string) string {
	v, _, _ = strings.Cut(v, "+")
	i := strings.LastIndexByte(v, '-')
	if i < 0 || len(v)-i-1 != 12 {
		return ""
	}
	h := v[i+1:]
	for _, c := range h {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return ""
		}
	}
	// the part before is a 14-digit timestamp (…-YYYYMMDDhhmmss or ….0.YYYYMMDDhhmmss)
	if j := i - 14; j < 1 || strings.Trim(v[j:i], "0123456789") != "" {
		return ""
	}
	return h
}
