package tpm

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
)

// maxResponse bounds a TPM response read from a socket. TPMs answer with at
// most a few KiB (MAX_RESPONSE_SIZE is 4096 in the reference code).
const maxResponse = 64 << 10

// framedConn is a TPM on a stream socket (swtpm's server port, which carries
// raw TPM command and response packets). go-tpm reads a response with one
// Read, as from a device; framedConn reads the whole packet its header
// announces so that such a Read returns all of it. After a failed read or
// write (a deadline, a cancelled context) the stream may be mid-packet, so
// the connection is closed rather than left to answer the next command
// with the rest of an old response.
type framedConn struct {
	net.Conn
	pending []byte
}

func (c *framedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err != nil {
		c.Conn.Close()
	}
	return n, err
}

func (c *framedConn) Read(p []byte) (int, error) {
	if len(c.pending) == 0 {
		buf, err := c.readResponse()
		if err != nil {
			c.Conn.Close()
			return 0, err
		}
		c.pending = buf
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

func (c *framedConn) readResponse() ([]byte, error) {
	var hdr [10]byte // tag (2), size (4), response code (4)
	if _, err := io.ReadFull(c.Conn, hdr[:]); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < uint32(len(hdr)) || size > maxResponse {
		return nil, fmt.Errorf("tpm socket: response of %d bytes (want %d to %d)", size, len(hdr), maxResponse)
	}
	buf := make([]byte, size)
	copy(buf, hdr[:])
	if _, err := io.ReadFull(c.Conn, buf[len(hdr):]); err != nil {
		return nil, err
	}
	return buf, nil
}
