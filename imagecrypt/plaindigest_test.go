package imagecrypt

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/coffer-dev/coffer/spec"
)

func sha(b []byte) [32]byte { return sha256.Sum256(b) }

func hashOf(b []byte) v1.Hash {
	s := sha(b)
	return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", s[:])}
}

// What each real writer wraps (see DigestMatch) is accepted as exactly that
// kind of match; anything else is an integrity failure.
func TestVerifyPlainDigest(t *testing.T) {
	t.Parallel()
	tarball := bytes.Repeat([]byte("layer tar bytes "), 4096)
	var gz, zs bytes.Buffer
	gw := gzip.NewWriter(&gz)
	gw.Write(tarball)
	gw.Close()
	zw, _ := zstd.NewWriter(&zs)
	zw.Write(tarball)
	zw.Close()
	other := hashOf([]byte("another blob"))
	for _, tc := range []struct {
		name    string
		mt      string
		blob    []byte
		wrapped string
		diffID  v1.Hash
		want    DigestMatch
		reads   int // times the plaintext is read again
	}{
		{"ocicrypt keeps compression", spec.MediaTypeLayerGzip, gz.Bytes(), hashOf(gz.Bytes()).String(), hashOf(tarball), MatchBlob, 0},
		{"c/image compressed while encrypting (buildah push)", spec.MediaTypeLayerGzip, gz.Bytes(), hashOf(tarball).String(), v1.Hash{}, MatchUncompressed, 1},
		{"same, zstd", spec.MediaTypeLayerZstd, zs.Bytes(), hashOf(tarball).String(), hashOf(tarball), MatchUncompressed, 1},
		{"c/image recompressed gzip to zstd", spec.MediaTypeLayerZstd, zs.Bytes(), other.String(), hashOf(tarball), MatchDiffID, 1},
		{"c/image decompressed to tar", spec.MediaTypeLayer, tarball, other.String(), hashOf(tarball), MatchDiffID, 1},
		{"no digest wrapped, diffID matches", spec.MediaTypeLayerGzip, gz.Bytes(), "", hashOf(tarball), MatchDiffID, 1},
		{"recompressed, no diffID known (stream processor)", spec.MediaTypeLayerZstd, zs.Bytes(), other.String(), v1.Hash{}, 0, 1},
		{"wrong digest, wrong diffID", spec.MediaTypeLayerGzip, gz.Bytes(), other.String(), other, 0, 1},
		{"no digest, no diffID", spec.MediaTypeLayerGzip, gz.Bytes(), "", v1.Hash{}, 0, 1},
		{"sha512 of the blob is not accepted", spec.MediaTypeLayerGzip, gz.Bytes(), "sha512:" + hashOf(gz.Bytes()).Hex, v1.Hash{}, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reads := 0
			open := func() (io.ReadCloser, error) { reads++; return io.NopCloser(bytes.NewReader(tc.blob)), nil }
			got, err := VerifyPlainDigest(context.Background(), tc.mt, tc.wrapped, sha(tc.blob), tc.diffID, open)
			if tc.want == 0 {
				if !errors.Is(err, spec.ErrIntegrity) {
					t.Fatalf("got %v, %v; want ErrIntegrity", got, err)
				}
			} else if err != nil || got != tc.want {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
			if reads != tc.reads {
				t.Errorf("plaintext read %d times, want %d", reads, tc.reads)
			}
		})
	}
}
