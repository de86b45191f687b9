package api

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// listenUnix0600 binds path, sets its mode to 0600 and only then listens:
// before listen(2) every connect(2) is refused, so no client ever sees the
// socket with the umask's mode.
func listenUnix0600(path string) (net.Listener, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close() // FileListener dups the descriptor
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		return nil, os.NewSyscallError("bind", err)
	}
	fail := func(err error) (net.Listener, error) {
		os.Remove(path)
		return nil, err
	}
	// Chmod follows symlinks: make sure path is still a socket (ours, as
	// only the agent's user may write its directory).
	if fi, err := os.Lstat(path); err != nil || fi.Mode().Type() != os.ModeSocket {
		return nil, fmt.Errorf("%s was replaced while binding", path)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return fail(err)
	}
	if err := unix.Listen(fd, unix.SOMAXCONN); err != nil {
		return fail(os.NewSyscallError("listen", err))
	}
	ln, err := net.FileListener(f)
	if err != nil {
		return fail(err)
	}
	return ln, nil
}
