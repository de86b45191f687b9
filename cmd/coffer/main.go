// Command coffer is a toolchain for confidential container images.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/coffer-dev/coffer/guest"
	"github.com/coffer-dev/coffer/internal/cli"
	"github.com/coffer-dev/coffer/spec"
)

// Exit codes, one per sentinel (README "Exit codes"): 1 other failure,
// 2 usage, 3 no key, 4 integrity, 5 policy denied, 6 not found,
// 7 unsupported (unknown scheme, format or media type; malformed input),
// 8 already exists, 9 registry credentials refused.
func exitCode(err error) int {
	switch {
	case errors.Is(err, spec.ErrUnauthorized):
		return 9
	case errors.Is(err, spec.ErrPolicyDenied):
		return 5
	case errors.Is(err, spec.ErrNotFound):
		return 6
	case errors.Is(err, spec.ErrIntegrity):
		return 4
	case errors.Is(err, spec.ErrNoKey):
		return 3
	case errors.Is(err, cli.ErrUsage):
		return 2
	case errors.Is(err, spec.ErrExists):
		return 8
	case errors.Is(err, spec.ErrUnsupported):
		return 7
	}
	return 1
}

func main() {
	// coffer is also the init of its vm guests (package guest): PID 1 with
	// no arguments is the guest's init, and the container's first process
	// starts as coffer too.
	if os.Getpid() == 1 && len(os.Args) == 1 {
		os.Exit(guest.Init())
	}
	if len(os.Args) > 1 && os.Args[1] == guest.ExecArg {
		os.Exit(guest.Exec(os.Args[2:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.NewRoot().ExecuteContext(ctx)
	stop()
	if err != nil {
		var st interface{ ExitStatus() int }
		if errors.As(err, &st) { // a command whose status is its child's (coffer vm run)
			os.Exit(st.ExitStatus())
		}
		fmt.Fprintln(os.Stderr, "coffer:", err)
		os.Exit(exitCode(err))
	}
}
