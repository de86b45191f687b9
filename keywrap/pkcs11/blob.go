package pkcs11

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"runtime"
	"strings"

	"github.com/coffer-dev/coffer/spec"
)

// Bounds on a wrapped entry.
const (
	// MaxEntry bounds one annotation entry (decoded JSON).
	MaxEntry = 1 << 20
	// MaxRecipients bounds the recipients of one entry.
	MaxRecipients = 256
	// maxCiphertext bounds one recipient's RSA ciphertext (a 16384-bit key).
	maxCiphertext = 2048
)

// Hash is the OAEP hash (and MGF1 hash) of a recipient.
type Hash string

// The OAEP hashes ocicrypt writes; an entry without one is SHA-1 (older
// ocicrypt).
const (
	SHA256 Hash = "sha256"
	SHA1   Hash = "sha1"
)

// ParseHash reads OCICRYPT_OAEP_HASHALG's value: "" or sha256 (the
// default), sha1 (what SoftHSM 2.6 can decrypt), case-insensitive.
func ParseHash(s string) (Hash, error) {
	switch strings.ToLower(s) {
	case "", "sha256":
		return SHA256, nil
	case "sha1":
		return SHA1, nil
	}
	return "", fmt.Errorf("OAEP hash %.32q: want sha256 or sha1: %w", s, spec.ErrUnsupported)
}

func (h Hash) new() hash.Hash {
	if h == SHA1 {
		return sha1.New()
	}
	return sha256.New()
}

// blob is ocicrypt's Pkcs11Blob: version 0, one entry per recipient.
type blob struct {
	Version    uint        `json:"version"`
	Recipients []recipient `json:"recipients"`
}

type recipient struct {
	Version uint   `json:"version"`
	Blob    string `json:"blob"`
	Hash    string `json:"hash,omitempty"`
}

// wrapped is one recipient of a parsed entry that coffer can try.
type wrapped struct {
	ct   []byte
	hash Hash
}

// parseEntry parses and bounds an entry: version 0, at most MaxRecipients,
// each a base64 RSA ciphertext of at most 2048 bytes. Recipients of a
// later version or an unknown hash are skipped (they cannot be opened
// here, and skipping them cannot yield other plaintext); n counts all.
func parseEntry(entry []byte) (ws []wrapped, n int, err error) {
	if len(entry) > MaxEntry {
		return nil, 0, fmt.Errorf("pkcs11 entry is %d bytes, more than %d: %w", len(entry), MaxEntry, spec.ErrIntegrity)
	}
	var b blob
	if err := json.Unmarshal(entry, &b); err != nil {
		return nil, 0, fmt.Errorf("pkcs11 entry: malformed JSON: %w", spec.ErrIntegrity)
	}
	if b.Version != 0 {
		return nil, 0, fmt.Errorf("pkcs11 entry version %d (coffer reads version 0): %w", b.Version, spec.ErrUnsupported)
	}
	if len(b.Recipients) == 0 || len(b.Recipients) > MaxRecipients {
		return nil, 0, fmt.Errorf("pkcs11 entry with %d recipients (want 1 to %d): %w", len(b.Recipients), MaxRecipients, spec.ErrIntegrity)
	}
	for _, r := range b.Recipients {
		if r.Version != 0 {
			continue
		}
		var h Hash
		switch r.Hash {
		case "", "sha1":
			h = SHA1
		case "sha256":
			h = SHA256
		default:
			continue
		}
		if len(r.Blob) > base64.StdEncoding.EncodedLen(maxCiphertext) {
			return nil, 0, fmt.Errorf("pkcs11 entry: recipient blob of %d characters, more than %d: %w", len(r.Blob), base64.StdEncoding.EncodedLen(maxCiphertext), spec.ErrIntegrity)
		}
		ct, err := base64.StdEncoding.DecodeString(r.Blob)
		if err != nil || len(ct) == 0 {
			return nil, 0, fmt.Errorf("pkcs11 entry: recipient blob is not base64: %w", spec.ErrIntegrity)
		}
		ws = append(ws, wrapped{ct: ct, hash: h})
	}
	return ws, len(b.Recipients), nil
}

// Describe lists an entry's recipients: "pkcs11 RSA-OAEP-SHA256 3072-bit"
// (the format names no key; the size is the ciphertext's).
func Describe(entry []byte) ([]string, error) {
	ws, n, err := parseEntry(entry)
	if err != nil {
		return nil, err
	}
	var lines []string
	for _, w := range ws {
		lines = append(lines, fmt.Sprintf("pkcs11 RSA-OAEP-%s %d-bit", strings.ToUpper(string(w.hash)), len(w.ct)*8))
	}
	if skipped := n - len(ws); skipped > 0 {
		lines = append(lines, fmt.Sprintf("pkcs11 (%d recipients of an unknown version or hash)", skipped))
	}
	return lines, nil
}

// Recipient is one recipient of a Wrapper: an RSA public key (encrypted
// in software) or a key file naming a public key object on a token
// (encrypted by the token, as ocicrypt does).
type Recipient struct {
	Public *rsa.PublicKey
	Key    *Key
}

// Wrapper writes one entry for all its recipients.
type Wrapper struct {
	cfg  Config
	hash Hash
	rs   []Recipient
}

// NewWrapper returns a wrapper for rs (at least one), OAEP with hash h
// (SHA256 unless the tokens that will decrypt need SHA1); cfg says which
// modules token recipients may load.
func NewWrapper(cfg Config, h Hash, rs ...Recipient) (*Wrapper, error) {
	if len(rs) == 0 {
		return nil, errors.New("pkcs11: no recipients")
	}
	if h != SHA1 && h != SHA256 {
		return nil, fmt.Errorf("pkcs11: OAEP hash %q: %w", h, spec.ErrUnsupported)
	}
	for _, r := range rs {
		switch {
		case (r.Public == nil) == (r.Key == nil):
			return nil, errors.New("pkcs11: a recipient is a public key or a token key, exactly one")
		case r.Public != nil && r.Public.N.BitLen() < 2048:
			return nil, fmt.Errorf("pkcs11: %d-bit RSA recipient: want at least 2048 bits: %w", r.Public.N.BitLen(), spec.ErrUnsupported)
		}
	}
	return &Wrapper{cfg: cfg, hash: h, rs: rs}, nil
}

// Scheme is "pkcs11".
func (w *Wrapper) Scheme() string { return Scheme }

// Wrap encrypts privopts for every recipient, in order.
func (w *Wrapper) Wrap(ctx context.Context, privopts []byte) ([]byte, error) {
	b := blob{Recipients: make([]recipient, 0, len(w.rs))}
	for _, r := range w.rs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var (
			ct  []byte
			err error
		)
		if r.Public != nil {
			if max := r.Public.Size() - 2*w.hash.new().Size() - 2; len(privopts) > max {
				return nil, tooLong(len(privopts), r.Public.N.BitLen(), w.hash, max)
			}
			ct, err = rsa.EncryptOAEP(w.hash.new(), rand.Reader, r.Public, privopts, nil)
			if err != nil {
				err = fmt.Errorf("pkcs11: RSA-OAEP for a %d-bit recipient: %w", r.Public.N.BitLen(), err)
			}
		} else {
			ct, err = tokenEncrypt(w.cfg, r.Key, w.hash, privopts)
		}
		if err != nil {
			return nil, err
		}
		b.Recipients = append(b.Recipients, recipient{Blob: base64.StdEncoding.EncodeToString(ct), Hash: string(w.hash)})
	}
	return json.Marshal(&b)
}

// tooLong: RSA-OAEP holds at most k/8 - 2·hLen - 2 bytes (190 for
// RSA-2048 with SHA-256; the layer options are about 200).
func tooLong(n, bits int, h Hash, max int) error {
	return fmt.Errorf("pkcs11: the layer options (%d bytes) do not fit RSA-OAEP-%s under a %d-bit key (at most %d bytes): use a 3072-bit or larger key, or OCICRYPT_OAEP_HASHALG=sha1: %w",
		n, strings.ToUpper(string(h)), bits, max, spec.ErrUnsupported)
}

// Unwrapper opens entries with private keys on tokens.
type Unwrapper struct {
	cfg  Config
	keys []*Key
}

// NewUnwrapper returns an unwrapper trying keys in order; cfg says which
// modules they may load.
func NewUnwrapper(cfg Config, keys ...*Key) (*Unwrapper, error) {
	if len(keys) == 0 {
		return nil, errors.New("pkcs11: no keys")
	}
	return &Unwrapper{cfg: cfg, keys: keys}, nil
}

// Scheme is "pkcs11".
func (u *Unwrapper) Scheme() string { return Scheme }

// Unwrap opens the entry with the first key (in order) that decrypts one
// of its recipients on its token. A key that opens none is spec.ErrNoKey;
// a token that cannot be used (module not allowed, wrong PIN, no such
// object, no cgo) is its own error, reported as the cause.
func (u *Unwrapper) Unwrap(ctx context.Context, entry []byte) ([]byte, error) {
	ws, n, err := parseEntry(entry)
	if err != nil {
		return nil, err
	}
	if len(ws) == 0 {
		return nil, fmt.Errorf("pkcs11 entry: none of its %d recipients has a version and hash coffer reads: %w", n, spec.ErrNoKey)
	}
	var noKey, failed []error
	for _, k := range u.keys {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		pt, err := tokenDecrypt(u.cfg, k, ws)
		if err == nil {
			return pt, nil
		}
		if errors.Is(err, spec.ErrNoKey) {
			noKey = append(noKey, err)
		} else {
			failed = append(failed, err)
		}
	}
	// A token that could not be asked is the cause worth reporting (callers
	// drop plain ErrNoKey answers of local keys).
	if len(failed) > 0 {
		return nil, errors.Join(failed...)
	}
	return nil, errors.Join(noKey...)
}

// multiarch is Debian's library directory name for this machine
// (x86_64-linux-gnu), one of ocicrypt's default module directories.
var multiarch = func() string {
	arch := map[string]string{"amd64": "x86_64", "arm64": "aarch64", "arm": "arm", "ppc64le": "powerpc64le", "riscv64": "riscv64", "s390x": "s390x"}[runtime.GOARCH]
	if runtime.GOOS != "linux" || arch == "" {
		return ""
	}
	return arch + "-linux-gnu"
}()
