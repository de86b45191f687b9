package imagecrypt

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coffer-dev/coffer/internal/ctxio"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/unpack"
)

// DigestMatch says what the digest inside a layer's wrapped private options
// turned out to name. ocicrypt wraps whatever digest its caller passes in the
// descriptor, and the real writers pass different things.
type DigestMatch int

const (
	// MatchBlob: the SHA-256 of the decrypted blob itself. ocicrypt callers
	// that keep the layer's compression write this: skopeo copy, ctr-enc
	// (imgcrypt), CoCo's coco_keyprovider through skopeo, and coffer.
	MatchBlob DigestMatch = iota + 1
	// MatchUncompressed: the SHA-256 of the decompressed blob (its diffID).
	// containers/image passes the source blob's digest and compresses after
	// that, so an uncompressed source compressed on the way (buildah push,
	// podman push, skopeo copy from containers-storage) wraps the
	// uncompressed digest.
	MatchUncompressed
	// MatchDiffID: the wrapped digest names a blob that no longer exists
	// (containers/image recompressed the source, e.g. gzip to zstd, while
	// encrypting, and wrapped the source blob's digest, or wrapped none);
	// the decompressed blob equals the image config's diffID instead.
	MatchDiffID
)

func (m DigestMatch) String() string {
	switch m {
	case MatchBlob:
		return "blob digest"
	case MatchUncompressed:
		return "uncompressed digest"
	case MatchDiffID:
		return "image config diffID"
	}
	return "no match"
}

// VerifyPlainDigest checks a decrypted layer blob (its HMAC already
// verified) against wrapped, the digest in its private options. blob is the
// SHA-256 of the decrypted blob, mediaType its plain media type, diffID the
// image config's diffID for the layer (zero when unknown, as for a stream
// processor). When wrapped is not blob, the plaintext is read once more
// from open, decompressed and hashed: the check is then against the
// uncompressed digest, which is what containers/image wrapped, or, as a
// last resort, the config's diffID. Anything else fails with
// spec.ErrIntegrity.
func VerifyPlainDigest(ctx context.Context, mediaType, wrapped string, blob [32]byte, diffID v1.Hash, open func() (io.ReadCloser, error)) (DigestMatch, error) {
	want, err := v1.NewHash(wrapped)
	if err == nil && want.Algorithm == "sha256" && want.Hex == hex.EncodeToString(blob[:]) {
		return MatchBlob, nil
	}
	if err != nil {
		want = v1.Hash{}
	}
	rc, err := open()
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	zr, err := unpack.Decompress(mediaType, rc, v1.Hash{})
	if err != nil {
		return 0, err
	}
	defer zr.Close()
	h := sha256.New()
	if _, err := io.Copy(h, ctxio.Reader(ctx, zr)); err != nil {
		return 0, fmt.Errorf("decompressing the decrypted layer to check its digest: %w", err)
	}
	got := hex.EncodeToString(h.Sum(nil))
	switch {
	case want.Algorithm == "sha256" && got == want.Hex:
		return MatchUncompressed, nil
	case diffID.Algorithm == "sha256" && got == diffID.Hex:
		return MatchDiffID, nil
	}
	return 0, fmt.Errorf("decrypted blob does not match the digest in its wrapped options (%q), compressed or uncompressed: %w", wrappedForError(wrapped), spec.ErrIntegrity)
}

func wrappedForError(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
