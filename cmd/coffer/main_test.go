package main

import (
	"errors"
	"fmt"
	"testing"

	"github.com/coffer-dev/coffer/internal/cli"
	"github.com/coffer-dev/coffer/spec"
)

// Every sentinel has one exit code, whatever wraps it.
func TestExitCodes(t *testing.T) {
	for err, want := range map[error]int{
		errors.New("other"):  1,
		cli.ErrUsage:         2,
		spec.ErrNoKey:        3,
		spec.ErrIntegrity:    4,
		spec.ErrPolicyDenied: 5,
		spec.ErrNotFound:     6,
		spec.ErrUnsupported:  7,
		spec.ErrExists:       8,
		spec.ErrUnauthorized: 9,
	} {
		if got := cli.ExitCode(fmt.Errorf("layer 0: %w", err)); got != want {
			t.Errorf("ExitCode(%v) = %d, want %d", err, got, want)
		}
	}
}
