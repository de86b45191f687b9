// Package bounded reads untrusted input with a size limit fixed by the
// caller, never by the input, and quotes untrusted strings safely in errors:
// the one home of the "read at most N bytes or fail" and "printable" helpers.
package bounded

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/coffer-dev/coffer/spec"
)

// ReadAll reads r to its end, failing (wrapping spec.ErrUnsupported) once
// more than max bytes arrive; at most max+1 bytes are ever buffered.
func ReadAll(r io.Reader, max int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("more than %d bytes: %w", max, spec.ErrUnsupported)
	}
	return b, nil
}

// ReadFile reads the file at path as ReadAll does, naming the path in the
// size error.
func ReadFile(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := ReadAll(f, max)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

// Printable returns s with control characters replaced by '?', cut to max
// bytes (then ending in "…") when max > 0: safe to quote in an error or log
// line whatever the input held.
func Printable(s string, max int) string {
	if max > 0 && len(s) > max {
		s = s[:max] + "…"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
