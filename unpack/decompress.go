package unpack

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
	"sync"

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
// type (or empty) and is otherwise rejected with [spec.ErrUnsupported]. A
// zstd frame asking for a window over 128 MiB (the reference decoder's
// default limit; the window is allocated up front) fails with
// [spec.ErrUnsupported] too.
//
// When diffID is not the zero Hash, the returned reader hashes everything
// it yields and, at the end of the stream, returns an error wrapping
// [spec.ErrIntegrity] instead of io.EOF if the digest differs; read it to
// EOF before trusting what it produced. Decompression and hashing run in a
// goroutine up to a few MiB ahead of the reader. Close stops it, waiting
// for a pending Read of r to return; it does not close r.
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
		zr, err := zstd.NewReader(br, zstd.WithDecoderMaxWindow(maxZstdWindow))
		if err != nil {
			return nil, fmt.Errorf("opening zstd layer: %w", err)
		}
		plain, closeFn = zr, func() error { zr.Close(); return nil }
	default:
		plain, closeFn = br, func() error { return nil }
	}
	l := &layerReader{
		ch:   make(chan chunk, pipeDepth),
		free: make(chan []byte, pipeDepth+1),
		done: make(chan struct{}),
		exit: make(chan struct{}),
	}
	for range pipeDepth + 1 {
		l.free <- make([]byte, pipeChunk)
	}
	go l.produce(plain, h, diffID, closeFn)
	return l, nil
}

const (
	pipeChunk = 1 << 20
	pipeDepth = 3
	// maxZstdWindow bounds the window a zstd frame may ask for: the decoder
	// allocates it up front, so a 10-byte frame declaring the library's
	// default maximum (512 MiB) cost that much memory. 128 MiB is the
	// reference zstd CLI's own default decoding limit, enough for every
	// level and for --long's default window.
	maxZstdWindow = 128 << 20
)

// layerReader decompresses and hashes in its own goroutine, one MiB ahead
// of the reader, so on two cores decompression and the digest overlap with
// the file system work. At the end of the stream it yields the diffID
// verdict instead of io.EOF.
type layerReader struct {
	ch        chan chunk
	free      chan []byte
	done      chan struct{} // closed by Close
	exit      chan struct{} // closed when the goroutine has returned
	closeOnce sync.Once

	cur, buf []byte // unread part of the current chunk, and the chunk
	err      error  // sticky end-of-stream result
}

type chunk struct {
	buf []byte
	n   int
	err error
}

func (l *layerReader) produce(src io.Reader, h hash.Hash, want v1.Hash, closeFn func() error) {
	defer close(l.exit)
	defer closeFn()
	for {
		var buf []byte
		select {
		case buf = <-l.free:
		case <-l.done:
			return
		}
		n := 0
		var err error
		for n < len(buf) && err == nil {
			var m int
			m, err = src.Read(buf[n:])
			n += m
		}
		if h != nil && n > 0 {
			h.Write(buf[:n])
		}
		if errors.Is(err, zstd.ErrWindowSizeExceeded) {
			err = fmt.Errorf("zstd layer asks for a window over %d MiB (%w): %w", maxZstdWindow>>20, err, spec.ErrUnsupported)
		}
		if err == io.EOF && h != nil {
			if got := hex.EncodeToString(h.Sum(nil)); got != want.Hex {
				err = fmt.Errorf("layer diffID is sha256:%s, the image config says %s: %w", got, want, spec.ErrIntegrity)
			}
		}
		select {
		case l.ch <- chunk{buf: buf, n: n, err: err}:
		case <-l.done:
			return
		}
		if err != nil {
			return
		}
	}
}

func (l *layerReader) Read(p []byte) (int, error) {
	select {
	case <-l.done:
		return 0, os.ErrClosed
	default:
	}
	for len(l.cur) == 0 {
		if l.err != nil {
			return 0, l.err
		}
		if l.buf != nil {
			l.free <- l.buf // never blocks: free holds every buffer
			l.buf = nil
		}
		select {
		case c := <-l.ch:
			l.buf, l.cur = c.buf, c.buf[:c.n]
			l.err = c.err
		case <-l.done:
			l.err = os.ErrClosed
		}
	}
	n := copy(p, l.cur)
	l.cur = l.cur[n:]
	return n, nil
}

// Close stops the decompressing goroutine and waits until it has let go of
// the blob reader (at most one pending Read of it), so the caller may
// close that next without racing a Read. It does not close the blob
// reader.
func (l *layerReader) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	<-l.exit
	return nil
}
