// Package tpm is the one place coffer talks to a TPM 2.0: it opens one (a
// device such as /dev/tpmrm0, or swtpm's TCP socket), loads an attestation
// key (AK), and produces quotes in the evidence format of Confidential
// Containers' TPM attester (guest-components attestation-agent/attester/src/tpm),
// which trustee's TPM verifier (deps/verifier/src/tpm) and coffer's broker
// (kbs/attest) check. Nothing else in coffer imports go-tpm.
//
// The AK is the persistent key at CoCoAKHandle when one is provisioned there
// (as trustee's kbs/test/setup-swtpm.sh does with tpm2_createak, so coffer and
// CoCo's attestation agent present the same key), and otherwise a primary key
// of the endorsement hierarchy made from go-tpm-tools' AK template (RSA-2048,
// RSASSA-SHA256, restricted signing, fixedTPM). A primary key is derived from
// the hierarchy's seed and the template, so the same TPM yields the same AK
// public key on every call without writing anything to its NV memory; only a
// change of the endorsement seed (TPM2_ChangeEPS, a new swtpm state) changes
// it. WithAKHandle selects one persistent AK explicitly.
//
// For Intel SecL's key transfer it also holds a binding key (binding.go):
// a decrypt-only RSA key that never leaves the TPM, certified by the AK;
// a key a broker wrapped to it unwraps only inside this TPM
// (TPM2_RSA_Decrypt).
//
// Where the AK comes from is not decided here: a verifier trusts an AK only
// when its operator registered its public key (coffer tpm ak-public).
package tpm

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"

	"github.com/coffer-dev/coffer/spec"
)

// DefaultAddr is the TPM Open uses for an empty address: the kernel's
// resource-managed device.
const DefaultAddr = "/dev/tpmrm0"

// CoCoAKHandle is the persistent handle where CoCo's TPM attester reads its
// AK (its AA_TPM_AK_HANDLE default).
const CoCoAKHandle uint32 = 0x81010002

var errClosed = errors.New("tpm: use of a closed TPM")

// TPM is an open TPM with the AK coffer quotes with. Its methods may be
// called from several goroutines; they take turns.
type TPM struct {
	mu   sync.Mutex
	rw   io.ReadWriteCloser
	conn net.Conn // rw when it is a socket: deadlines follow the context
	ak   *client.Key
	o    options

	// the binding key, once created (binding.go)
	bind       tpmutil.Handle
	bindPublic []byte
	bindKey    *rsa.PublicKey
	closed     bool
}

type options struct {
	akHandle uint32
}

// Option configures Open and New.
type Option func(*options) error

// WithAKHandle quotes with the persistent key at handle h (0x81000000 to
// 0x81FFFFFF), which must be a restricted signing key usable without a
// password, instead of choosing the AK as the package documentation says.
func WithAKHandle(h uint32) Option {
	return func(o *options) error {
		if h>>24 != 0x81 {
			return fmt.Errorf("AK handle %#x is not a persistent handle (0x81xxxxxx): %w", h, spec.ErrUnsupported)
		}
		o.akHandle = h
		return nil
	}
}

// CheckAddr reports whether addr is an address Open understands: "" (for
// DefaultAddr), an absolute device path, or tcp://HOST:PORT.
func CheckAddr(addr string) error {
	_, _, err := parseAddr(addr)
	return err
}

func parseAddr(addr string) (network, target string, err error) {
	switch {
	case addr == "":
		return "device", DefaultAddr, nil
	case strings.HasPrefix(addr, "tcp://"):
		hp := strings.TrimPrefix(addr, "tcp://")
		if _, _, err := net.SplitHostPort(hp); err != nil || strings.Contains(hp, "/") {
			return "", "", fmt.Errorf("tpm address %q: want tcp://HOST:PORT: %w", addr, spec.ErrUnsupported)
		}
		return "tcp", hp, nil
	case strings.HasPrefix(addr, "/"):
		return "device", addr, nil
	}
	return "", "", fmt.Errorf("tpm address %q: want a device path (%s) or tcp://HOST:PORT (swtpm --server type=tcp): %w", addr, DefaultAddr, spec.ErrUnsupported)
}

// Open opens the TPM at addr: a device path (DefaultAddr when empty) or
// tcp://HOST:PORT, the server port of swtpm's socket interface (start swtpm
// with --flags not-need-init,startup-clear so that it needs nothing on its
// control port). A socket TPM has no resource manager, so Open flushes the
// transient objects a crashed earlier client may have left (swtpm serves one
// connection at a time, so they are nobody else's).
func Open(ctx context.Context, addr string, opts ...Option) (*TPM, error) {
	network, target, err := parseAddr(addr)
	if err != nil {
		return nil, err
	}
	if network == "device" {
		f, err := os.OpenFile(target, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("opening tpm: %w", err)
		}
		return New(f, opts...)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return nil, fmt.Errorf("opening tpm: %w", err)
	}
	t, err := New(&framedConn{Conn: c}, opts...)
	if err != nil {
		return nil, err
	}
	if err := t.flushTransients(ctx); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// New uses rw, a TPM transport where each Read returns one whole response
// (a device, go-tpm-tools' simulator), and takes ownership of it: Close
// closes it.
func New(rw io.ReadWriteCloser, opts ...Option) (*TPM, error) {
	t := &TPM{rw: rw}
	for _, opt := range opts {
		if err := opt(&t.o); err != nil {
			rw.Close()
			return nil, err
		}
	}
	if fc, ok := rw.(*framedConn); ok {
		t.conn = fc.Conn
	}
	return t, nil
}

// Close flushes the AK when it is a transient object and closes the TPM.
func (t *TPM) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	if t.ak != nil {
		t.ak.Close() // flushes transient keys only
		t.ak = nil
	}
	if t.bind != 0 {
		tpm2.FlushContext(t.rw, t.bind)
		t.bind = 0
	}
	return t.rw.Close()
}

// begin locks t and makes ctx bound the TPM commands that follow: a
// socket's deadline follows ctx; a device is checked between commands.
// The returned function undoes both.
func (t *TPM) begin(ctx context.Context) (end func(), err error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, errClosed
	}
	if err := ctx.Err(); err != nil {
		t.mu.Unlock()
		return nil, err
	}
	if t.conn == nil {
		return t.mu.Unlock, nil
	}
	if d, ok := ctx.Deadline(); ok {
		t.conn.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { t.conn.SetDeadline(time.Unix(1, 0)) })
	return func() {
		stop()
		t.conn.SetDeadline(time.Time{})
		t.mu.Unlock()
	}, nil
}

// cmdErr reports err from a TPM command, or ctx's error when ctx ended it.
// The socket's deadline is ctx's deadline on a separate timer, so it can
// fire a moment before ctx is marked done: a timeout at or after the
// deadline is the deadline.
func cmdErr(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("tpm %s: %w", what, ctx.Err())
	}
	if d, ok := ctx.Deadline(); ok && errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(d) {
		return fmt.Errorf("tpm %s: %w", what, context.DeadlineExceeded)
	}
	return fmt.Errorf("tpm %s: %w", what, err)
}

func (t *TPM) flushTransients(ctx context.Context) error {
	end, err := t.begin(ctx)
	if err != nil {
		return err
	}
	defer end()
	vals, _, err := tpm2.GetCapability(t.rw, tpm2.CapabilityHandles, 64, uint32(tpm2.HandleTypeTransient)<<24)
	if err != nil {
		return cmdErr(ctx, "listing transient objects", err)
	}
	for _, v := range vals {
		if h, ok := v.(tpmutil.Handle); ok {
			if err := tpm2.FlushContext(t.rw, h); err != nil {
				return cmdErr(ctx, "flushing a stale transient object", err)
			}
		}
	}
	return nil
}
