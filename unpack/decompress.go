package unpack

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/coffer-dev/coffer/spec"
)

// Docker schema 2 layer media types that are not in package spec.
const (
	mediaTypeDockerLayerTar = "application/vnd.docker.image.rootfs.diff.tar"
)

var knownLayerTypes = map[string]bool{
	"":                                     true, // unknown: sniff
	spec.MediaTypeLayer:                    true,
	spec.MediaTypeLayerGzip:                true,
	spec.MediaTypeLayerZstd:                true,
	spec.MediaTypeLayerNonDistributable:    true,
	spec.MediaTypeLayerNonDistributableGz:  true,
	spec.MediaTypeLayerNonDistributableZst: true,
	spec.MediaTypeDockerLayer:              true,
	spec.MediaTypeDockerForeignLayer:       true,
	mediaTypeDockerLayerTar:                true,
}

var (
	magicGzip = []byte{0x1f, 0x8b}
	magicZstd = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// Decompress returns the uncompressed tar stream of a layer blob r of the
// given media type. The compression (none, gzip, zstd) is taken from the
// stream's magic bytes; the media type must be a known, unencrypted layer
// type (or empty) and is otherwise rejected with [spec.ErrUnsupported].
//
// When diffID is not the zero Hash, the returned reader hashes everything
// it yields and, at the end of the stream, returns an error wrapping
// [spec.ErrIntegrity] instead of io.EOF if the digest differs; read it to
// EOF before trusting what it produced. Close releases the decompressor; it
// does not close r.
func Decompress(mediaType string, r io.Reader, diffID v1.Hash) (io.ReadCloser, error) {
	if strings.HasSuffix(mediaType, spec.EncryptedSuffix) {
		return nil, fmt.Errorf("layer media type %q is encrypted, decrypt it first: %w", mediaType, spec.ErrUnsupported)
	}
	if !knownLayerTypes[mediaType] {
		return nil, fmt.Errorf("layer media type %q: %w", mediaType, spec.ErrUnsupported)
	}
	var h hash.Hash
	if diffID != (v1.Hash{}) {
		if diffID.Algorithm != "sha256" {
			return nil, fmt.Errorf("diffID algorithm %q: %w", diffID.Algorithm, spec.ErrUnsupported)
		}
		h = sha256.New()
	}
	br := bufio.NewReaderSize(r, 256<<10)
	magic, err := br.Peek(4)
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("reading layer: %w", err)
	}
	var (
		plain   io.Reader
		closeFn func() error
	)
	switch {
	case bytes.HasPrefix(magic, magicGzip):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("opening gzip layer: %w", err)
		}
		plain, closeFn = zr, zr.Close
	case bytes.HasPrefix(magic, magicZstd):
		zr, err := zstd.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("opening zstd layer: %w", err)
		}
		plain, closeFn = zr, func() error { zr.Close(); return nil }
	default:
		plain, closeFn = br, func() error { return nil }
	}
	return &layerReader{r: plain, h: h, want: diffID, close: closeFn}, nil
}

// layerReader yields the uncompressed stream and checks its digest at EOF.
type layerReader struct {
	r     io.Reader
	h     hash.Hash
	want  v1.Hash
	err   error // sticky end-of-stream result
	close func() error
}

func (l *layerReader) Read(p []byte) (int, error) {
	if l.err != nil {
		return 0, l.err
	}
	n, err := l.r.Read(p)
	if l.h != nil && n > 0 {
		l.h.Write(p[:n])
	}
	if err == io.EOF && l.h != nil {
		if got := hex.EncodeToString(l.h.Sum(nil)); got != l.want.Hex {
			err = fmt.Errorf("layer diffID is sha256:%s, the image config says %s: %w", got, l.want, spec.ErrIntegrity)
		}
	}
	if err != nil {
		l.err = err
	}
	return n, err
}

func (l *layerReader) Close() error { return l.close() }
