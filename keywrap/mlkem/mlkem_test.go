package mlkem

import (
	"bytes"
	"context"
	"crypto/mlkem"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/spec"
)

// NIST SP 800-185 KMAC samples #4 and #5 (csrc.nist.gov KMAC_samples.pdf).
func TestKMAC256Samples(t *testing.T) {
	t.Parallel()
	key, _ := hex.DecodeString("404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f")
	long := make([]byte, 200)
	for i := range long {
		long[i] = byte(i)
	}
	for _, tc := range []struct {
		data []byte
		s    string
		want string
	}{
		{[]byte{0, 1, 2, 3}, "My Tagged Application", "20c570c31346f703c9ac36c61c03cb64c3970d0cfc787e9b79599d273a68d2f7f69d4cc3de9d104a351689f27cf6f5951f0103f33f4f24871024d9c27773a8dd"},
		{long, "", "75358cf39e41494e949707927cee0af20a3ff553904c86b08f21cc414bcfd691589d27cf5e15369cbbff8b9a4c2eb17800855d0235ff635da82533ec6b759b69"},
	} {
		if got := hex.EncodeToString(kmac256(key, tc.data, 64, []byte(tc.s))); got != tc.want {
			t.Errorf("KMAC256(S=%q) = %s, want %s", tc.s, got, tc.want)
		}
	}
}

func newKey(t testing.TB) *mlkem.DecapsulationKey768 {
	dk, err := mlkem.GenerateKey768()
	if err != nil {
		t.Fatal(err)
	}
	return dk
}

func TestRoundTripWrongKeyTamper(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dk, other := newKey(t), newKey(t)
	w, _ := NewWrapper(dk.EncapsulationKey(), "node-1")
	msg := []byte(`{"symkey":"AAAA","digest":"sha256:00","cipheroptions":{}}`)
	e, err := w.Wrap(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	var hdr map[string]any
	var fl entry
	json.Unmarshal(e, &fl)
	raw, _ := b64.DecodeString(fl.Protected)
	if !bytes.HasPrefix(raw, []byte(`{"alg":"ML-KEM-768+A192KW","enc":"A256GCM","ek":"`)) {
		t.Errorf("protected header %s: want alg, enc first", raw)
	}
	json.Unmarshal(raw, &hdr)
	u, _ := NewUnwrapper(other, dk)
	got, err := u.Unwrap(ctx, e)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("round trip: %q, %v", got, err)
	}
	if lines, ok, err := Describe(e); !ok || err != nil || len(lines) != 1 || lines[0] != "alg=ML-KEM-768+A192KW enc=A256GCM kid=node-1" {
		t.Errorf("Describe: %q %v %v", lines, ok, err)
	}
	wrong, _ := NewUnwrapper(other)
	if _, err := wrong.Unwrap(ctx, e); !errors.Is(err, spec.ErrNoKey) {
		t.Errorf("wrong key: %v, want ErrNoKey", err)
	}
	// Each field tampered: a flipped bit in the KEM ciphertext is the wrong
	// key (implicit rejection); anywhere else the key unwraps and the
	// payload fails to authenticate.
	flip := func(s string) string {
		b, _ := b64.DecodeString(s)
		b[len(b)/2] ^= 1
		return b64.EncodeToString(b)
	}
	for name, tc := range map[string]struct {
		edit func(*entry)
		want error
	}{
		"ek": {func(x *entry) {
			h := map[string]any{}
			json.Unmarshal(raw, &h)
			h["ek"] = flip(h["ek"].(string))
			b, _ := json.Marshal(h)
			x.Protected = b64.EncodeToString(b)
		}, spec.ErrNoKey},
		"encrypted_key": {func(x *entry) { x.EncryptedKey = flip(x.EncryptedKey) }, spec.ErrNoKey},
		"kid in header": {func(x *entry) {
			b := bytes.Replace(raw, []byte(`"kid":"node-1"`), []byte(`"kid":"node-2"`), 1)
			x.Protected = b64.EncodeToString(b)
		}, spec.ErrIntegrity},
		"iv":         {func(x *entry) { x.IV = flip(x.IV) }, spec.ErrIntegrity},
		"ciphertext": {func(x *entry) { x.Ciphertext = flip(x.Ciphertext) }, spec.ErrIntegrity},
		"tag":        {func(x *entry) { x.Tag = flip(x.Tag) }, spec.ErrIntegrity},
	} {
		x := fl
		tc.edit(&x)
		b, _ := json.Marshal(x)
		if pt, err := u.Unwrap(ctx, b); !errors.Is(err, tc.want) || pt != nil {
			t.Errorf("%s tampered: %q, %v; want %v", name, pt, err, tc.want)
		}
	}
	// A jwe entry of another algorithm is not ours: ErrNoKey, not an error
	// that would hide the other recipients.
	rsa := []byte(`{"protected":"eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ","encrypted_key":"AA","iv":"AA","ciphertext":"AA","tag":"AA"}`)
	if _, err := u.Unwrap(ctx, rsa); !errors.Is(err, ErrNotThisScheme) || !errors.Is(err, spec.ErrNoKey) {
		t.Errorf("RSA-OAEP entry: %v", err)
	}
	if _, ok, _ := Describe(rsa); ok {
		t.Error("Describe claimed an RSA-OAEP entry")
	}
}

func TestKeysRoundTripAndRefusals(t *testing.T) {
	t.Parallel()
	dk := newKey(t)
	priv, err := MarshalPrivateKey(dk, "k1")
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := MarshalPublicKey(dk.EncapsulationKey(), "k1")
	if !IsKey(priv) || !IsKey(pub) || IsKey([]byte(`{"kty":"EC"}`)) {
		t.Error("IsKey")
	}
	back, kid, err := ParsePrivateKey(priv)
	if err != nil || kid != "k1" || !bytes.Equal(back.Bytes(), dk.Bytes()) {
		t.Fatalf("private round trip: %v %q", err, kid)
	}
	ek, _, err := ParsePublicKey(pub)
	if err != nil || !bytes.Equal(ek.Bytes(), dk.EncapsulationKey().Bytes()) {
		t.Fatalf("public round trip: %v", err)
	}
	if _, _, err := ParsePrivateKey(pub); err == nil || !strings.Contains(err.Error(), "no priv") {
		t.Errorf("public key as private: %v", err)
	}
	other, _ := MarshalPrivateKey(newKey(t), "")
	var a, b jwk
	json.Unmarshal(priv, &a)
	json.Unmarshal(other, &b)
	a.Pub = b.Pub
	mixed, _ := json.Marshal(a)
	if _, _, err := ParsePrivateKey(mixed); err == nil || !strings.Contains(err.Error(), "pub is not the key of priv") {
		t.Errorf("mismatched pub: %v", err)
	}
	for _, bad := range []string{`{"kty":"AKP","alg":"ML-KEM-768+A192KW","pub":"AAAA"}`, `{"kty":"AKP","alg":"ML-KEM-1024+A256KW","pub":""}`, `{"kty":"AKP","alg":"ML-KEM-768+A192KW","pub":"","x":1}`, `[]`} {
		if _, _, err := ParsePublicKey([]byte(bad)); !errors.Is(err, spec.ErrUnsupported) {
			t.Errorf("%s: %v", bad, err)
		}
	}
}

func BenchmarkWrapUnwrap(b *testing.B) {
	dk := newKey(b)
	w, _ := NewWrapper(dk.EncapsulationKey(), "")
	u, _ := NewUnwrapper(dk)
	msg := bytes.Repeat([]byte("x"), 200)
	ctx := context.Background()
	b.Run("wrap", func(b *testing.B) {
		for b.Loop() {
			w.Wrap(ctx, msg)
		}
	})
	e, _ := w.Wrap(ctx, msg)
	b.Run("unwrap", func(b *testing.B) {
		for b.Loop() {
			if _, err := u.Unwrap(ctx, e); err != nil {
				b.Fatal(err)
			}
		}
	})
}
