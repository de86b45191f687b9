package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/spf13/cobra"

	"github.com/coffer-dev/coffer/spec"
)

// exitRow is one documented exit code: the sentinel an error wraps to get
// it. The README's "Exit codes" and `coffer --help` are this table.
type exitRow struct {
	code     int
	sentinel error
	what     string
}

// exitTable is checked in order, first match wins: a more specific cause
// (credentials, policy, …) before the generic ones, and "unsupported" (an
// unknown transport or scheme) before "usage" because reference parsing
// wraps both.
var exitTable = []exitRow{
	{9, spec.ErrUnauthorized, "credentials refused (a registry's HTTP 401/403, a token's PIN)"},
	{5, spec.ErrPolicyDenied, "denied by policy (or the broker refuses the sample TEE)"},
	{6, spec.ErrNotFound, "not found (an image, a broker resource, an input file)"},
	{6, fs.ErrNotExist, ""}, // a file given on the command line
	{4, spec.ErrIntegrity, "integrity check failed (tampered, truncated, wrong digest, bad evidence signature)"},
	{3, spec.ErrNoKey, "no key opens a layer (or the LUKS2 scratch disk)"},
	{7, spec.ErrUnsupported, "unsupported (unknown transport, scheme, format or media type; malformed input)"},
	{2, ErrUsage, "usage (wrong arguments, unknown flag or command, conflicting flags)"},
	{8, spec.ErrExists, "already exists (e.g. a broker key at that --key-id)"},
}

// ExitCode maps an error returned by a command to its documented exit
// code: 0 for nil, 1 for any failure the table does not name.
func ExitCode(err error) int {
	if err == nil {
		return 0
	}
	for _, r := range exitTable {
		if errors.Is(err, r.sentinel) {
			return r.code
		}
	}
	return 1
}

// exitCodesHelp is the table for `coffer --help`, by code.
func exitCodesHelp() string {
	rows := map[int]string{0: "ok", 1: "any other failure"}
	for _, r := range exitTable {
		if r.what != "" {
			rows[r.code] = r.what
		}
	}
	var b strings.Builder
	b.WriteString("Exit codes:\n")
	for c := 0; c <= 9; c++ {
		fmt.Fprintf(&b, "  %d  %s\n", c, rows[c])
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// usageErrors makes every way cobra can reject a command line wrap
// ErrUsage (exit 2): unknown flags and bad flag values, wrong argument
// counts, unknown commands (also under a group such as `coffer kbs`).
func usageErrors(root *cobra.Command) {
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return fmt.Errorf("%w: %w", err, ErrUsage) })
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		switch {
		case c.HasSubCommands() && c.Run == nil && c.RunE == nil:
			// A group: no arguments of its own; anything left is an unknown command.
			c.Args = wrapArgs(cobra.NoArgs)
			c.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
		case c.Args != nil:
			c.Args = wrapArgs(c.Args)
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

func wrapArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return fmt.Errorf("%w (see %s --help): %w", err, cmd.CommandPath(), ErrUsage)
		}
		return nil
	}
}
