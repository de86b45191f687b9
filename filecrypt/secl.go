package filecrypt

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha512"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/coffer-dev/coffer/internal/ctxio"
	"github.com/coffer-dev/coffer/spec"
)

// SecL's VM image format (Intel SecL-DC workload-policy-manager
// pkg/util/encrypt.go, lib/common/crypt EncryptionHeader), for files a SecL
// component wrote or will read:
//
//	offset  size  field (little endian)
//	0       12    magic "ISecL-VMC", zero-padded
//	12      4     offset of the ciphertext: 44
//	16      4     version "V1", zero-padded
//	20      12    GCM IV
//	32      12    algorithm "GCM-256", zero-padded
//	44      …     AES-256-GCM(key, IV, whole image, no AAD): ciphertext ‖ 16-byte tag
//
// One GCM message covers the whole image, so nothing can be authenticated
// before the last byte: both directions hold the whole image in memory,
// and coffer refuses files above MaxSecLSize (the header itself is not
// authenticated, as in SecL; a changed header fails the tag through the IV
// or is refused by the checks below).
const (
	SecLHeaderSize = 44
	// MaxSecLSize bounds a SecL-format image (plaintext), which is held in memory.
	MaxSecLSize = 1 << 30
	seclMagic   = "ISecL-VMC"
	seclVersion = "V1"
	seclAlg     = "GCM-256"
)

// IsSecL reports whether head (at least 9 bytes of a file) starts with
// SecL's magic.
func IsSecL(head []byte) bool { return bytes.HasPrefix(head, []byte(seclMagic)) }

func pad(s string, n int) []byte {
	b := make([]byte, n)
	copy(b, s)
	return b
}

// EncryptSecL writes src encrypted under key in SecL's format.
func EncryptSecL(ctx context.Context, dst io.Writer, src io.Reader, key []byte) (*Result, error) {
	plain, err := readBounded(ctx, src)
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	gcm, err := seclGCM(key)
	if err != nil {
		return nil, err
	}
	iv := make([]byte, gcm.NonceSize())
	if _, err := rand.Read(iv); err != nil {
		return nil, err
	}
	hdr := make([]byte, 0, SecLHeaderSize+len(plain)+gcm.Overhead())
	hdr = append(hdr, pad(seclMagic, 12)...)
	hdr = binary.LittleEndian.AppendUint32(hdr, SecLHeaderSize)
	hdr = append(hdr, pad(seclVersion, 4)...)
	hdr = append(hdr, iv...)
	hdr = append(hdr, pad(seclAlg, 12)...)
	out := gcm.Seal(hdr, iv, plain, nil)
	h := newAsyncHashOf(sha512.New384())
	h.Write(out)
	if _, err := dst.Write(out); err != nil {
		h.stop()
		return nil, fmt.Errorf("filecrypt: %w", err)
	}
	return &Result{PlainSize: int64(len(plain)), CipherSize: int64(len(out)), Digest: h.Sum()}, nil
}

// DecryptSecL writes the plaintext of a SecL-format src to dst; nothing is
// written unless the whole file authenticated (and, with WithDigest,
// matched the digest).
func DecryptSecL(ctx context.Context, dst io.Writer, src io.Reader, key []byte, opts ...Option) (*Result, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	data, err := readBounded(ctx, src)
	if err != nil {
		return nil, err
	}
	if len(data) < SecLHeaderSize+16 || !IsSecL(data) {
		return nil, fmt.Errorf("filecrypt: not a SecL ISecL-VMC file: %w", spec.ErrIntegrity)
	}
	if off := binary.LittleEndian.Uint32(data[12:16]); off != SecLHeaderSize ||
		!bytes.Equal(data[:12], pad(seclMagic, 12)) || !bytes.Equal(data[16:20], pad(seclVersion, 4)) || !bytes.Equal(data[32:44], pad(seclAlg, 12)) {
		return nil, fmt.Errorf("filecrypt: SecL header (offset, version V1, algorithm GCM-256) not recognized: %w", spec.ErrUnsupported)
	}
	res := &Result{CipherSize: int64(len(data))}
	if o.digest != nil {
		res.Digest = digestOf(o.digest, data)
		if !equalDigest(o.digest, res.Digest) {
			return nil, fmt.Errorf("filecrypt: not the file the flavor names (digest differs): %w", spec.ErrIntegrity)
		}
	}
	gcm, err := seclGCM(key)
	if err != nil {
		return nil, err
	}
	plain, err := gcm.Open(data[SecLHeaderSize:SecLHeaderSize], data[20:32], data[SecLHeaderSize:], nil)
	if err != nil {
		return nil, fmt.Errorf("filecrypt: SecL file does not authenticate (tampered, truncated or wrong key): %w", spec.ErrIntegrity)
	}
	defer clear(plain)
	if _, err := dst.Write(plain); err != nil {
		return nil, fmt.Errorf("filecrypt: %w", err)
	}
	res.PlainSize = int64(len(plain))
	return res, nil
}

func seclGCM(key []byte) (cipher.AEAD, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("filecrypt: key of %d bytes, want %d: %w", len(key), KeySize, spec.ErrNoKey)
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// readBounded reads src whole, refusing more than the SecL bound.
func readBounded(ctx context.Context, src io.Reader) ([]byte, error) {
	const limit = MaxSecLSize + SecLHeaderSize + 16
	data, err := io.ReadAll(io.LimitReader(ctxio.Reader(ctx, src), limit+1))
	if err != nil {
		return nil, fmt.Errorf("filecrypt: %w", err)
	}
	if len(data) > limit {
		return nil, fmt.Errorf("filecrypt: SecL's whole-file format holds the image in memory; coffer refuses images over %d bytes (use the streaming format): %w", MaxSecLSize, spec.ErrUnsupported)
	}
	return data, nil
}
