package spec

import (
	"errors"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
)

func TestMediaTypes(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      error
	}{
		{MediaTypeLayerGzip, MediaTypeLayerGzip + "+encrypted", nil},
		{MediaTypeLayerZstd, MediaTypeLayerZstd + "+encrypted", nil},
		{MediaTypeLayerNonDistributable, MediaTypeLayerNonDistributable + "+encrypted", nil},
		{MediaTypeDockerLayer, "", ErrUnsupported},
		{MediaTypeLayerGzip + "+encrypted", "", ErrUnsupported},
	} {
		got, err := EncryptedMediaType(tc.in)
		if got != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("EncryptedMediaType(%q) = %q, %v; want %q, %v", tc.in, got, err, tc.want, tc.err)
		}
		if tc.err == nil {
			back, err := DecryptedMediaType(got)
			if err != nil || back != tc.in {
				t.Errorf("DecryptedMediaType(%q) = %q, %v", got, back, err)
			}
		}
	}
}

func TestPublicOptionsRoundTrip(t *testing.T) {
	h := []byte(strings.Repeat("h", 32))
	s := EncodePublic(PublicOptions{Cipher: CipherAES256CTR, HMAC: h})
	// The exact JSON ocicrypt writes.
	want := "eyJjaXBoZXIiOiJBRVNfMjU2X0NUUl9ITUFDX1NIQTI1NiIsImhtYWMiOiJhR2hvYUdob2FHaG9hR2hvYUdob2FHaG9hR2hvYUdob2FHaG9hR2hvYUdnPSIsImNpcGhlcm9wdGlvbnMiOnt9fQ=="
	if s != want {
		t.Fatalf("EncodePublic = %s, want %s", s, want)
	}
	p, err := DecodePublic(s)
	if err != nil || string(p.HMAC) != string(h) {
		t.Fatalf("DecodePublic = %+v, %v", p, err)
	}
	if _, err := DecodePublic("!!"); !errors.Is(err, ErrIntegrity) {
		t.Errorf("bad base64: err = %v", err)
	}
}

func TestPrivateOptions(t *testing.T) {
	p := PrivateOptions{
		SymKey:        []byte(strings.Repeat("k", 32)),
		Digest:        "sha256:" + strings.Repeat("a", 64),
		CipherOptions: map[string][]byte{"nonce": []byte(strings.Repeat("n", 16))},
	}
	b := MarshalPrivate(p)
	wantPrefix := `{"symkey":"a2tr`
	if !strings.HasPrefix(string(b), wantPrefix) || !strings.Contains(string(b), `"cipheroptions":{"nonce":"bm5u`) {
		t.Fatalf("MarshalPrivate = %s", b)
	}
	got, err := UnmarshalPrivate(b)
	if err != nil || got.Digest != p.Digest {
		t.Fatalf("UnmarshalPrivate = %+v, %v", got, err)
	}
	p.SymKey = p.SymKey[:5]
	if _, err := UnmarshalPrivate(MarshalPrivate(p)); !errors.Is(err, ErrIntegrity) {
		t.Errorf("short key: err = %v", err)
	}
}

func TestKeyAnnotations(t *testing.T) {
	v := AppendKeyEntry(AppendKeyEntry("", []byte("one")), []byte("two"))
	got, err := KeyAnnotations(map[string]string{
		AnnotationKeyPrefix + "jwe": v, "other": "x", AnnotationPubOpts: "y",
	})
	if err != nil || len(got["jwe"]) != 2 || string(got["jwe"][1]) != "two" || len(got) != 1 {
		t.Fatalf("KeyAnnotations = %q, %v", got, err)
	}
	if _, err := KeyAnnotations(map[string]string{AnnotationKeyPrefix + "jwe": "%%"}); !errors.Is(err, ErrIntegrity) {
		t.Errorf("bad entry: err = %v", err)
	}
}

func FuzzDecodeOptions(f *testing.F) {
	f.Add(EncodePublic(PublicOptions{Cipher: CipherAES256CTR, HMAC: make([]byte, 32)}), []byte(`{"symkey":"","digest":"x"}`))
	f.Fuzz(func(t *testing.T, pub string, priv []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		if p, err := DecodePublic(pub); err == nil && len(p.HMAC) != 32 {
			t.Fatalf("accepted hmac of %d bytes", len(p.HMAC))
		}
		if p, err := UnmarshalPrivate(priv); err == nil && (len(p.SymKey) != 32 || len(p.Nonce()) != 16) {
			t.Fatalf("accepted bad private options")
		}
		_, _ = KeyAnnotations(map[string]string{AnnotationKeyPrefix + "jwe": pub})
	})
}
