// Command coffer is a toolchain for confidential container images.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/coffer-dev/coffer/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.NewRoot().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "coffer:", cli.Explain(err))
		os.Exit(cli.ExitCode(err)) // the README's and `coffer --help`'s table
	}
}
