package ctddecoder

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/coffer-dev/coffer/keywrap"
)

// Option configures Decode.
type Option func(*options) error

type options struct {
	mediaType      string
	payload        []byte
	keyDirs        []string
	providerConfig string
	containerdRoot string
	tempDir        string
	extra          []keywrap.Unwrapper
	perNamespace   bool
	perImage       bool
	address        string
	snapshotters   []string
}

// WithMediaType is the media type of the input (containerd's
// STREAM_PROCESSOR_MEDIATYPE); required, must be an encrypted layer type.
func WithMediaType(mt string) Option { return func(o *options) error { o.mediaType = mt; return nil } }

// WithPayload is the raw fd-3 payload (nil or empty: none).
func WithPayload(b []byte) Option { return func(o *options) error { o.payload = b; return nil } }

// WithPayloadFile reads the payload from f (containerd's fd 3) when f is a
// readable pipe (containerd's) or a readable regular file outside /proc and
// /sys (a test's).
// Anything else means no payload: when containerd sends none, fd 3 is free
// at exec and the Go runtime itself takes it (Go 1.25+ keeps the cgroup CPU
// quota file open there), so reading it blindly would parse that file.
func WithPayloadFile(f *os.File) Option {
	return func(o *options) error {
		if f == nil {
			return nil
		}
		st, err := f.Stat()
		if err != nil {
			return nil
		}
		// Not readable (a wrapper such as GNU time may hold its output
		// file there): not a payload.
		if fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0); err != nil || fl&unix.O_ACCMODE == unix.O_WRONLY {
			return nil
		}
		if st.Mode()&os.ModeNamedPipe == 0 {
			if !st.Mode().IsRegular() {
				return nil
			}
			p, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
			if err != nil || strings.HasPrefix(p, "/sys/") || strings.HasPrefix(p, "/proc/") {
				return nil
			}
		}
		b, err := io.ReadAll(io.LimitReader(f, MaxPayload+1))
		if err != nil {
			return fmt.Errorf("reading the payload on fd 3: %w", err)
		}
		o.payload = b
		return nil
	}
}

// WithKeysPath adds a node key directory: every private key file directly
// in it, in lexical order (--decryption-keys-path). Repeatable.
func WithKeysPath(dir string) Option {
	return func(o *options) error {
		if dir == "" {
			return errors.New("empty decryption keys path")
		}
		o.keyDirs = append(o.keyDirs, dir)
		return nil
	}
}

// WithKeyProviderConfig is the ocicrypt keyprovider config file
// (OCICRYPT_KEYPROVIDER_CONFIG); every provider in it is asked for entries
// of its own scheme only. Default none.
func WithKeyProviderConfig(path string) Option {
	return func(o *options) error { o.providerConfig = path; return nil }
}

// WithContainerdRoot is containerd's root directory, where a layer's
// descriptor is looked up when no payload names it. Default none (then a
// payload with the descriptor is required).
func WithContainerdRoot(dir string) Option {
	return func(o *options) error { o.containerdRoot = dir; return nil }
}

// WithContainerdAddress is containerd's socket. The decoder asks it which
// layers are being extracted (their active snapshots in the given
// snapshotters, default overlayfs and native): with no payload, the layer's
// descriptor is then known before the layer is read, and spooling and
// authenticating take one pass instead of two. Per-namespace keys need it.
// A socket that does not exist is ignored.
func WithContainerdAddress(address string, snapshotters ...string) Option {
	return func(o *options) error {
		o.address = address
		o.snapshotters = snapshotters
		if len(o.snapshotters) == 0 {
			o.snapshotters = []string{"overlayfs", "native"}
		}
		return nil
	}
}

// WithPerNamespaceKeys turns on per-tenant keys: the decoder asks
// containerd (WithContainerdAddress) which namespace is extracting the
// layer (see package tenant) and adds the keys in <keys path>/<namespace>/
// of every WithKeysPath directory; files directly in a keys path stay
// shared by every namespace. A layer no namespace (or several at once) is
// extracting fails with spec.ErrPolicyDenied. Needs WithContainerdRoot, to
// learn the layer's chain ID.
func WithPerNamespaceKeys() Option {
	return func(o *options) error { o.perNamespace = true; return nil }
}

// WithPerImageKeys turns on per-image-reference keys, the tenant scoping
// that works under Kubernetes (where the CRI plugin pulls every pod's image
// in the one namespace k8s.io): the decoder asks containerd for the
// extraction snapshot of the layer and reads the image reference CRI is
// pulling it for (tenant.CRIImageRefLabel; CRI sets it when its
// disable_snapshot_annotations is false), and adds the keys of
// <keys path>/by-image/<registry>/<path prefix>/ for every path-component
// prefix of that reference's repository: 127.0.0.1:5000/team-a/app:v1 gets
// by-image/127.0.0.1:5000/team-a/app/, …/team-a/ and …/127.0.0.1:5000/.
// A layer being extracted for no reference, or for several at once, fails
// with spec.ErrPolicyDenied. Needs WithContainerdRoot and
// WithContainerdAddress.
func WithPerImageKeys() Option {
	return func(o *options) error { o.perImage = true; return nil }
}

// WithTempDir is where the ciphertext is spooled (an unlinked file: nothing
// is left behind, even on a crash). Default os.TempDir().
func WithTempDir(dir string) Option { return func(o *options) error { o.tempDir = dir; return nil } }

// WithUnwrappers adds unwrappers (tried after the other key sources).
func WithUnwrappers(u ...keywrap.Unwrapper) Option {
	return func(o *options) error { o.extra = append(o.extra, u...); return nil }
}
