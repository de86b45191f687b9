//go:build unix

package staging

import (
	"errors"
	"syscall"
)

// alive reports whether a process with this id exists (EPERM: it does,
// under another user).
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
