package imagecrypt

import (
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// BlobProgress reports how much of one source layer's blob an encrypt or
// decrypt has read: Done of Total bytes (Total is the descriptor's size, a
// claim the reader enforces).
type BlobProgress struct {
	Digest      v1.Hash
	Done, Total int64
}

// WithBlobProgress calls f, from several goroutines, as the bytes of each
// layer's blob are read (at every read: f must be cheap). The last call
// for a blob read whole has Done == Total.
func WithBlobProgress(f func(BlobProgress)) Option {
	return func(o *options) error { o.blobProgress = f; return nil }
}

// counted reports rc's reads of d's blob to the session's blob progress.
func (s *session) counted(rc io.ReadCloser, d v1.Descriptor) io.ReadCloser {
	if s.o.blobProgress == nil {
		return rc
	}
	s.o.blobProgress(BlobProgress{Digest: d.Digest, Total: d.Size})
	return &countingReader{ReadCloser: rc, f: s.o.blobProgress, p: BlobProgress{Digest: d.Digest, Total: d.Size}}
}

type countingReader struct {
	io.ReadCloser
	f func(BlobProgress)
	p BlobProgress
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.ReadCloser.Read(b)
	if n > 0 {
		c.p.Done += int64(n)
		c.f(c.p)
	}
	return n, err
}
