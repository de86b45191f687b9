//go:build !linux

package atomicfile

import (
	"io"
	"os"
)

// writeUnlinked: no O_TMPFILE outside Linux; the caller uses a named temp file.
func writeUnlinked(*os.Root, string, string, func(io.Writer) error, options) (bool, error) {
	return false, nil
}
