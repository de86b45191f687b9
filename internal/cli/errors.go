package cli

import "errors"

// ErrUsage marks errors in how a command was called (exit code 2).
var ErrUsage = errors.New("usage")
