package mlkem

import (
	"context"
	"crypto/mlkem"
	"errors"
	"testing"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/spec"
)

// FuzzUnwrap: any entry either opens to what was sealed (only the seeded
// genuine entry can) or fails with one of the documented sentinels, within
// a time bound.
func FuzzUnwrap(f *testing.F) {
	seed := make([]byte, mlkem.SeedSize)
	dk, _ := mlkem.NewDecapsulationKey768(seed)
	good, _ := Seal(dk.EncapsulationKey(), "k", []byte("payload"))
	f.Add(good)
	f.Add([]byte(`{"protected":"eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ","encrypted_key":"AA","iv":"AA","ciphertext":"AA","tag":"AA"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"protected":"e30"}`))
	u, _ := NewUnwrapper(dk)
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		pt, err := u.Unwrap(context.Background(), data)
		if err == nil {
			if string(pt) != "payload" {
				t.Fatalf("opened to %q", pt)
			}
			return
		}
		if !errors.Is(err, spec.ErrNoKey) && !errors.Is(err, spec.ErrUnsupported) && !errors.Is(err, spec.ErrIntegrity) {
			t.Fatalf("error without a sentinel: %v", err)
		}
		if pt != nil {
			t.Fatal("plaintext with an error")
		}
	})
}

// FuzzParseKey: key files never panic, and whatever parses round-trips.
func FuzzParseKey(f *testing.F) {
	seed := make([]byte, mlkem.SeedSize)
	dk, _ := mlkem.NewDecapsulationKey768(seed)
	priv, _ := MarshalPrivateKey(dk, "k")
	pub, _ := MarshalPublicKey(dk.EncapsulationKey(), "")
	f.Add(priv)
	f.Add(pub)
	f.Add([]byte(`{"kty":"AKP","alg":"ML-KEM-768+A192KW","pub":"","priv":""}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		if k, kid, err := ParsePrivateKey(data); err == nil {
			again, _ := MarshalPrivateKey(k, kid)
			if k2, _, err := ParsePrivateKey(again); err != nil || string(k2.Bytes()) != string(k.Bytes()) {
				t.Fatalf("private key does not round-trip: %v", err)
			}
		} else if !errors.Is(err, spec.ErrUnsupported) {
			t.Fatalf("error without a sentinel: %v", err)
		}
		if _, _, err := ParsePublicKey(data); err != nil && !errors.Is(err, spec.ErrUnsupported) {
			t.Fatalf("error without a sentinel: %v", err)
		}
	})
}
