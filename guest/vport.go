package guest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/coffer-dev/coffer/spec"
)

// findPort returns the device of the virtio-serial port called name
// (/dev/vportNpM; udev's /dev/virtio-ports/NAME links do not exist in
// the guest), waiting for the driver to probe it until ctx ends.
func findPort(ctx context.Context, name string) (string, error) {
	for {
		names, _ := filepath.Glob("/sys/class/virtio-ports/vport*/name")
		for _, n := range names {
			b, err := readBounded(n, 256)
			if err == nil && strings.TrimSpace(string(b)) == name {
				dev := "/dev/" + filepath.Base(filepath.Dir(n))
				if _, err := os.Stat(dev); err == nil {
					return dev, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("virtio-serial port %s did not appear (is virtio_console loaded, does QEMU have -device virtserialport,name=%s?): %w", name, name, spec.ErrNotFound)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// portListener is a net.Listener over one virtio-serial port: Accept
// opens the port once the host's end is connected and yields it as one
// connection; after that connection is closed (the host went away), the
// next Accept waits for the host to connect again.
type portListener struct {
	path   string
	free   chan struct{} // holds a token while no connection is open
	closed chan struct{}
	once   sync.Once
	ended  func() // called when a connection is closed
}

func listenPort(path string, ended func()) *portListener {
	l := &portListener{path: path, free: make(chan struct{}, 1), closed: make(chan struct{}), ended: ended}
	l.free <- struct{}{}
	return l
}

// hostPoll is how often Accept looks whether the host has connected.
const hostPoll = 100 * time.Millisecond

func (l *portListener) Accept() (net.Conn, error) {
	select {
	case <-l.free:
	case <-l.closed:
		return nil, net.ErrClosed
	}
	for {
		f, err := os.OpenFile(l.path, os.O_RDWR, 0)
		if err != nil {
			l.free <- struct{}{}
			return nil, fmt.Errorf("virtio-serial port %s: %w", l.path, err)
		}
		// The port polls POLLHUP while the host's end is not connected
		// (and reads end at once).
		connected := false
		for !connected {
			hup, err := pollHUP(f)
			if err != nil {
				break
			}
			if !hup {
				connected = true
				break
			}
			select {
			case <-l.closed:
				f.Close()
				l.free <- struct{}{}
				return nil, net.ErrClosed
			case <-time.After(hostPoll):
			}
		}
		if connected {
			return &portConn{File: f, l: l}, nil
		}
		f.Close()
		select {
		case <-l.closed:
			l.free <- struct{}{}
			return nil, net.ErrClosed
		case <-time.After(hostPoll):
		}
	}
}

// pollHUP polls f for a while and says whether it reported POLLHUP
// (SyscallConn, not Fd, so that f stays non-blocking for the runtime's
// poller).
func pollHUP(f *os.File) (bool, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return false, err
	}
	var revents int16
	var perr error
	if err := rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		_, perr = unix.Poll(fds, int(hostPoll/time.Millisecond))
		revents = fds[0].Revents
	}); err != nil {
		return false, err
	}
	if perr != nil && !errors.Is(perr, unix.EINTR) {
		return false, perr
	}
	return revents&unix.POLLHUP != 0, nil
}

func (l *portListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *portListener) Addr() net.Addr { return portAddr(l.path) }

// portConn is the open port as a net.Conn.
type portConn struct {
	*os.File
	l    *portListener
	once sync.Once
}

func (c *portConn) Close() error {
	var err error
	c.once.Do(func() {
		err = c.File.Close()
		if c.l.ended != nil {
			c.l.ended()
		}
		c.l.free <- struct{}{}
	})
	return err
}

func (c *portConn) LocalAddr() net.Addr  { return portAddr(c.l.path) }
func (c *portConn) RemoteAddr() net.Addr { return portAddr("host") }

type portAddr string

func (a portAddr) Network() string { return "virtio-serial" }
func (a portAddr) String() string  { return string(a) }
