//go:build !linux

package api

import (
	"net"
	"os"
)

// listenUnix0600 listens on path and sets its mode to 0600. Unlike on Linux,
// the socket accepts connections with the umask's mode until the chmod.
func listenUnix0600(path string) (net.Listener, error) {
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false) // unixListener removes it
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		os.Remove(path)
		return nil, err
	}
	return ln, nil
}
