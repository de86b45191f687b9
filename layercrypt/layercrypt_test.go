package layercrypt

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"testing"

	"github.com/coffer-dev/coffer/spec"
)

func katKey() Key {
	var k Key
	copy(k.Sym[:], "01234567890123456789012345678912")
	copy(k.Nonce[:], "0123456789abcdef")
	return k
}

// The known-answer vector from WIRE.md §1.
func TestKnownAnswer(t *testing.T) {
	var ct bytes.Buffer
	s, err := Encrypt(context.Background(), &ct, bytes.NewReader([]byte("this is some data")), katKey(), WithPlainDigest())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := hex.EncodeToString(ct.Bytes()), "f7f1b3a213c2c6569dc3f4e500d4acae80"; got != want {
		t.Errorf("ciphertext = %s, want %s", got, want)
	}
	if got, want := hex.EncodeToString(s.HMAC[:]), "0eb5b68c70073db8906086276d13df972b9ed702c7e4d88df91a19264243c2a2"; got != want {
		t.Errorf("hmac = %s, want %s", got, want)
	}
	if s.Digest != sha256.Sum256(ct.Bytes()) || s.PlainDigest != sha256.Sum256([]byte("this is some data")) || s.Size != 17 {
		t.Errorf("digests or size wrong: %+v", s)
	}
}

func TestRoundTripSizes(t *testing.T) {
	for _, n := range []int{0, 1, 15, 16, 17, chunkSize - 1, chunkSize, chunkSize + 1, 3*chunkSize + 12345, inFlight*chunkSize*2 + 7} {
		plain := make([]byte, n)
		rand.Read(plain)
		k, err := NewKey()
		if err != nil {
			t.Fatal(err)
		}
		var ct, pt bytes.Buffer
		s, err := Encrypt(context.Background(), &ct, bytes.NewReader(plain), k)
		if err != nil {
			t.Fatal(err)
		}
		if ct.Len() != n || s.Size != int64(n) {
			t.Fatalf("n=%d: ciphertext length %d, size %d", n, ct.Len(), s.Size)
		}
		o, err := Decrypt(context.Background(), &pt, bytes.NewReader(ct.Bytes()), k, s.HMAC[:])
		if err != nil {
			t.Fatalf("n=%d: decrypt: %v", n, err)
		}
		if !bytes.Equal(pt.Bytes(), plain) || o.Digest != sha256.Sum256(plain) || o.Size != int64(n) {
			t.Fatalf("n=%d: round trip mismatch", n)
		}
	}
}

func TestDecryptRejects(t *testing.T) {
	plain := make([]byte, 3*chunkSize+5)
	rand.Read(plain)
	k, _ := NewKey()
	var ct bytes.Buffer
	s, err := Encrypt(context.Background(), &ct, bytes.NewReader(plain), k)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewKey()
	tampered := bytes.Clone(ct.Bytes())
	tampered[chunkSize+3] ^= 1
	for name, tc := range map[string]struct {
		blob []byte
		key  Key
	}{
		"tampered":  {tampered, k},
		"truncated": {ct.Bytes()[:ct.Len()-1], k},
		"extended":  {append(bytes.Clone(ct.Bytes()), 0), k},
		"wrong key": {ct.Bytes(), other},
	} {
		_, err := Decrypt(context.Background(), io.Discard, bytes.NewReader(tc.blob), tc.key, s.HMAC[:])
		if !errors.Is(err, spec.ErrIntegrity) {
			t.Errorf("%s: err = %v, want ErrIntegrity", name, err)
		}
	}
}

type failingReader struct{ n int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("connection reset")
	}
	f.n -= len(p)
	return len(p), nil
}

func TestErrorsPropagate(t *testing.T) {
	k, _ := NewKey()
	_, err := Encrypt(context.Background(), io.Discard, &failingReader{n: 2 * chunkSize}, k)
	if err == nil || err.Error() != "reading layer: connection reset" {
		t.Errorf("read error: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = Decrypt(ctx, io.Discard, bytes.NewReader(make([]byte, 10)), k, make([]byte, 32))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

func BenchmarkEncrypt(b *testing.B) { benchPump(b, true) }
func BenchmarkDecrypt(b *testing.B) { benchPump(b, false) }

func benchPump(b *testing.B, enc bool) {
	const size = 64 << 20
	data := make([]byte, size)
	k, _ := NewKey()
	var ct bytes.Buffer
	s, _ := Encrypt(context.Background(), &ct, bytes.NewReader(data), k)
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		var err error
		if enc {
			_, err = Encrypt(context.Background(), io.Discard, bytes.NewReader(data), k)
		} else {
			_, err = Decrypt(context.Background(), io.Discard, bytes.NewReader(ct.Bytes()), k, s.HMAC[:])
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}

func TestPlaintextOfInvertsEncrypt(t *testing.T) {
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	pt := bytes.Repeat([]byte("coffer "), 300000)
	var ct bytes.Buffer
	if _, err := Encrypt(context.Background(), &ct, bytes.NewReader(pt), k); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(PlaintextOf(bytes.NewReader(ct.Bytes()), k))
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("PlaintextOf: %d bytes, %v; want the %d plaintext bytes", len(got), err, len(pt))
	}
}
