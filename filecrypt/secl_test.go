package filecrypt_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/coffer-dev/coffer/filecrypt"
	"github.com/coffer-dev/coffer/spec"
)

// SecL's ISecL-VMC layout, checked field by field, and opened with plain
// AES-GCM as SecL's WLA opens it; DecryptFile recognizes it by its magic.
func TestSecLFormat(t *testing.T) {
	t.Parallel()
	k := key(t)
	dir := t.TempDir()
	pt := random(100_000)
	in, enc, out := filepath.Join(dir, "plain"), filepath.Join(dir, "enc"), filepath.Join(dir, "out")
	os.WriteFile(in, pt, 0o600)
	res, err := filecrypt.EncryptFile(t.Context(), in, enc, k, filecrypt.WithSecLFormat())
	if err != nil {
		t.Fatal(err)
	}
	ct, _ := os.ReadFile(enc)
	for _, tc := range []struct {
		name      string
		got, want []byte
	}{
		{"magic", ct[0:12], []byte("ISecL-VMC\x00\x00\x00")},
		{"offset", ct[12:16], binary.LittleEndian.AppendUint32(nil, 44)},
		{"version", ct[16:20], []byte("V1\x00\x00")},
		{"algorithm", ct[32:44], []byte("GCM-256\x00\x00\x00\x00\x00")},
	} {
		if !bytes.Equal(tc.got, tc.want) {
			t.Errorf("%s = %q, want %q", tc.name, tc.got, tc.want)
		}
	}
	b, _ := aes.NewCipher(k)
	gcm, _ := cipher.NewGCM(b)
	if got, err := gcm.Open(nil, ct[20:32], ct[44:], nil); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("plain AES-GCM over the body: %v", err)
	}
	if _, err := filecrypt.DecryptFile(t.Context(), enc, out, k, filecrypt.WithDigest(res.Digest)); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, pt) {
		t.Error("DecryptFile of a SecL file differs")
	}
	// an older SecL WPM's flavor digest: SHA-256 of the encrypted file
	d256 := sha256.Sum256(ct)
	if _, err := filecrypt.DecryptFile(t.Context(), enc, out, k, filecrypt.WithDigest(d256[:])); err != nil {
		t.Errorf("SHA-256 flavor digest: %v", err)
	}
	flipped := append([]byte{}, ct...)
	flipped[len(flipped)-100] ^= 1
	badIV := append([]byte{}, ct...)
	badIV[25] ^= 1
	for _, tc := range []struct {
		name string
		ct   []byte
		want error
	}{
		{"bit flipped", flipped, spec.ErrIntegrity},
		{"IV changed", badIV, spec.ErrIntegrity},
		{"truncated", ct[:len(ct)-1], spec.ErrIntegrity},
		{"offset changed", append(append(append([]byte{}, ct[:12]...), 45, 0, 0, 0), ct[16:]...), spec.ErrUnsupported},
	} {
		bad, o := filepath.Join(dir, "bad"), filepath.Join(dir, "o")
		os.WriteFile(bad, tc.ct, 0o600)
		if _, err := filecrypt.DecryptFile(t.Context(), bad, o, k); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
		if _, err := os.Stat(o); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: output exists", tc.name)
		}
	}
}
