// Command coffer is a toolchain for confidential container images.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/coffer-dev/coffer/guest"
	"github.com/coffer-dev/coffer/internal/cli"
	"github.com/coffer-dev/coffer/runtime/shim"
)

func main() {
	// coffer is also the init of its vm guests (package guest): PID 1 with
	// no arguments is the guest's init, and the container's first process
	// starts as coffer too.
	if os.Getpid() == 1 && len(os.Args) == 1 {
		os.Exit(guest.Init())
	}
	// Called as containerd-shim-coffer-v2 (a link to coffer), coffer is
	// the io.containerd.coffer.v2 runtime's shim.
	if filepath.Base(os.Args[0]) == shim.BinaryName {
		shim.Main()
		return
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
		fmt.Fprintln(os.Stderr, "coffer:", cli.Explain(err))
		os.Exit(cli.ExitCode(err)) // the README's and `coffer --help`'s table
	}
}
