//go:build !linux

package imagecrypt

import (
	"errors"
	"os"
)

// openUnnamed is Linux's O_TMPFILE; elsewhere staging files are named.
func openUnnamed(string) (*os.File, error) { return nil, errors.ErrUnsupported }
