package api

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Listen opens addr for the agent's APIs: "unix:PATH" (or "unix://PATH", as
// in "unix:///run/coffer/agent.sock") is a unix socket, anything else a TCP
// host:port.
//
// The socket file is created with mode 0600 before the socket accepts
// connections, in a directory created 0700 if missing. A stale socket left
// at PATH by a dead agent is removed; a live one (something answers) or a
// file that is not a socket is an error. Closing the listener removes the
// socket file if it is still the one Listen created. PATH's directory should
// be writable only by the agent's user.
func Listen(addr string) (net.Listener, error) {
	path, ok := strings.CutPrefix(addr, "unix:")
	if !ok {
		return net.Listen("tcp", addr)
	}
	if p, ok := strings.CutPrefix(path, "//"); ok {
		path = p
	}
	if path == "" {
		return nil, fmt.Errorf("listen %q: want unix:PATH", addr)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	ln, err := listenUnix0600(path)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return &unixListener{Listener: ln, addr: &net.UnixAddr{Name: path, Net: "unix"}, fi: fi}, nil
}

// removeStaleSocket removes path if it is a socket nobody answers on.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket; refusing to replace it", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("%s: another process is serving on this socket", path)
	}
	return os.Remove(path)
}

// unixListener reports the socket's path as its address and removes the
// socket file on Close.
type unixListener struct {
	net.Listener
	addr *net.UnixAddr
	fi   os.FileInfo // the socket file as created
	once sync.Once
	err  error
}

func (l *unixListener) Addr() net.Addr { return l.addr }

func (l *unixListener) Close() error {
	l.once.Do(func() {
		l.err = l.Listener.Close()
		// Only our socket: another agent may have replaced it since.
		if fi, err := os.Lstat(l.addr.Name); err == nil && os.SameFile(fi, l.fi) {
			if err := os.Remove(l.addr.Name); err != nil && l.err == nil {
				l.err = err
			}
		}
	})
	return l.err
}
