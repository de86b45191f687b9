package filecrypt_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/coffer-dev/coffer/filecrypt"
	"github.com/coffer-dev/coffer/spec"
)

func key(t testing.TB) []byte {
	k := make([]byte, filecrypt.KeySize)
	rand.Read(k)
	return k
}

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// Tink's AES256_GCM_HKDF_1MB layout: a 40-byte header (length byte, 32-byte
// salt, 7-byte nonce prefix), then 1 MiB ciphertext segments (the first
// one 40 bytes shorter), each with a 16-byte tag.
const (
	header = 40
	tag    = 16
	seg    = filecrypt.SegmentSize
)

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	k := key(t)
	for _, n := range []int{0, 1, seg - header - tag, seg - header - tag + 1, 3*seg + 5} {
		pt := random(n)
		var ct bytes.Buffer
		res, err := filecrypt.Encrypt(t.Context(), &ct, bytes.NewReader(pt), k)
		if err != nil {
			t.Fatal(err)
		}
		if res.PlainSize != int64(n) || res.CipherSize != int64(ct.Len()) {
			t.Errorf("%d bytes: result sizes %d/%d, want %d/%d", n, res.PlainSize, res.CipherSize, n, ct.Len())
		}
		if d := sha256.Sum256(ct.Bytes()); !bytes.Equal(res.Digest, d[:]) {
			t.Errorf("%d bytes: digest is not the SHA-256 of the ciphertext", n)
		}
		if ct.Bytes()[0] != header {
			t.Errorf("%d bytes: header length byte %d, want %d (Tink layout)", n, ct.Bytes()[0], header)
		}
		var got bytes.Buffer
		dres, err := filecrypt.Decrypt(t.Context(), &got, bytes.NewReader(ct.Bytes()), k, filecrypt.WithDigest(res.Digest))
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if !bytes.Equal(got.Bytes(), pt) || !bytes.Equal(dres.Digest, res.Digest) {
			t.Errorf("%d bytes: round trip differs", n)
		}
	}
}

// The attacks of the issue on the file format: each is refused with
// ErrIntegrity and DecryptFile leaves no output file.
func TestDecryptFileRefuses(t *testing.T) {
	t.Parallel()
	k := key(t)
	dir := t.TempDir()
	pt := random(3*seg + 1000) // four segments
	in := filepath.Join(dir, "plain")
	os.WriteFile(in, pt, 0o600)
	enc := filepath.Join(dir, "enc")
	res, err := filecrypt.EncryptFile(t.Context(), in, enc, k)
	if err != nil {
		t.Fatal(err)
	}
	ct, _ := os.ReadFile(enc)
	first := seg - header // ciphertext of segment 0 after the header
	s1, s2 := header+first, header+first+seg
	swapped := append([]byte{}, ct[:s1]...)
	swapped = append(swapped, ct[s2:s2+seg]...)
	swapped = append(swapped, ct[s1:s2]...)
	swapped = append(swapped, ct[s2+seg:]...)
	flipped := append([]byte{}, ct...)
	flipped[s2+100] ^= 1
	headerFlip := append([]byte{}, ct...)
	headerFlip[5] ^= 0x80
	for _, tc := range []struct {
		name string
		ct   []byte
		key  []byte
		opts []filecrypt.Option
	}{
		{"truncated at a segment boundary", ct[:s2], k, nil},
		{"truncated mid segment", ct[:s2+10], k, nil},
		{"last segment dropped", ct[:s2+seg], k, nil},
		{"segments swapped", swapped, k, nil},
		{"bit flipped", flipped, k, nil},
		{"salt changed", headerFlip, k, nil},
		{"wrong key", ct, key(t), nil},
		{"empty file", nil, k, nil},
		{"digest of another file", ct, k, []filecrypt.Option{filecrypt.WithDigest(make([]byte, 32))}},
		{"SHA-384 digest of another file", ct, k, []filecrypt.Option{filecrypt.WithDigest(make([]byte, 48))}},
	} {
		bad := filepath.Join(dir, "bad")
		os.WriteFile(bad, tc.ct, 0o600)
		out := filepath.Join(dir, "out")
		_, err := filecrypt.DecryptFile(t.Context(), bad, out, tc.key, tc.opts...)
		if !errors.Is(err, spec.ErrIntegrity) {
			t.Errorf("%s: err = %v, want ErrIntegrity", tc.name, err)
		}
		if _, serr := os.Stat(out); !errors.Is(serr, os.ErrNotExist) {
			t.Errorf("%s: output exists after a failed decrypt", tc.name)
		}
		if left, _ := filepath.Glob(filepath.Join(dir, ".tmp-*")); len(left) > 0 {
			t.Errorf("%s: temp files left: %v", tc.name, left)
		}
	}
	out := filepath.Join(dir, "out")
	if _, err := filecrypt.DecryptFile(t.Context(), enc, out, k, filecrypt.WithDigest(res.Digest)); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, pt) {
		t.Error("decrypted file differs")
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := filecrypt.Encrypt(ctx, io.Discard, bytes.NewReader(random(10)), key(t))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

func benchmark(b *testing.B, decrypt bool, digest ...bool) {
	k := key(b)
	pt := random(64 << 20)
	var ct bytes.Buffer
	res, _ := filecrypt.Encrypt(context.Background(), &ct, bytes.NewReader(pt), k)
	b.SetBytes(int64(len(pt)))
	b.ResetTimer()
	for range b.N {
		if decrypt {
			var opts []filecrypt.Option
			if len(digest) == 0 {
				opts = append(opts, filecrypt.WithDigest(res.Digest))
			}
			if _, err := filecrypt.Decrypt(context.Background(), io.Discard, bytes.NewReader(ct.Bytes()), k, opts...); err != nil {
				b.Fatal(err)
			}
		} else if _, err := filecrypt.Encrypt(context.Background(), io.Discard, bytes.NewReader(pt), k); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncrypt(b *testing.B) { benchmark(b, false) }
func BenchmarkDecrypt(b *testing.B) { benchmark(b, true) }

// BenchmarkDecryptNoDigest: the cipher alone (no flavor digest to check).
func BenchmarkDecryptNoDigest(b *testing.B) { benchmark(b, true, false) }
