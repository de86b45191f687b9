package protocol

import (
	"crypto/mlkem"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/spec"
)

// An ML-KEM-768 tee key (kty AKP, as trustee's prototype sends it): the
// resource is sealed with ML-KEM-768+A192KW, opens with the key, and fails
// with ErrIntegrity under another key or when tampered.
func TestSealOpenMLKEM(t *testing.T) {
	dk, _ := mlkem.GenerateKey768()
	other, _ := mlkem.GenerateKey768()
	pub, err := PublicTeeKey(dk.EncapsulationKey())
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(pub)
	if !strings.HasPrefix(string(raw), `{"kty":"AKP","alg":"ML-KEM-768+A192KW","pub":"`) {
		t.Errorf("tee-pubkey %s", raw)
	}
	var sent TeePubKey
	json.Unmarshal(raw, &sent)
	if _, err := sent.PublicKey(); err != nil {
		t.Fatalf("the broker's check of the tee key: %v", err)
	}
	secret := []byte("0123456789abcdef0123456789abcdef")
	s, err := NewSealer(sent)
	if err != nil {
		t.Fatal(err)
	}
	r1, _ := s.Seal(secret)
	r2, err := s.Seal(secret)
	if err != nil {
		t.Fatal(err)
	}
	if r1.Protected == r2.Protected {
		t.Error("two responses share one encapsulation")
	}
	hdr, _ := b64.DecodeString(r1.Protected)
	if !strings.HasPrefix(string(hdr), `{"alg":"ML-KEM-768+A192KW","enc":"A256GCM","ek":"`) || strings.Count(string(hdr), ":") != 3 {
		t.Errorf("protected header %s: want alg, enc, ek as trustee writes it", hdr)
	}
	if again := reserialize(t, r1.Protected); again != r1.Protected {
		t.Errorf("re-serialized header differs")
	}
	o, err := NewOpener(dk)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*Response{r1, r2} {
		if got, err := o.Open(r); err != nil || string(got) != string(secret) {
			t.Fatalf("Open: %q, %v", got, err)
		}
	}
	if _, err := Open(other, r1); !errors.Is(err, spec.ErrIntegrity) {
		t.Errorf("wrong key: %v, want ErrIntegrity", err)
	}
	for _, mut := range []func(r *Response){
		func(r *Response) { r.Tag = flip(r.Tag) },
		func(r *Response) { r.Ciphertext = flip(r.Ciphertext) },
		func(r *Response) { r.IV = flip(r.IV) },
		func(r *Response) { r.EncryptedKey = flip(r.EncryptedKey) },
		func(r *Response) { r.Protected = flip(r.Protected) },
	} {
		bad := *r1
		mut(&bad)
		if _, err := o.Open(&bad); !errors.Is(err, spec.ErrIntegrity) {
			t.Errorf("tampered Open: %v, want ErrIntegrity", err)
		}
	}
	// The report data binds the AKP members in canonical order.
	want, err := CanonicalizeValue(map[string]any{"tee-pubkey": pub, "nonce": "n", "additional-evidence": ""})
	if err != nil {
		t.Fatal(err)
	}
	if got := reportDataJSON("n", pub, ""); string(got) != string(want) {
		t.Errorf("report data JSON %s, want %s", got, want)
	}
	for _, bad := range []TeePubKey{
		{Kty: "AKP", Alg: "ML-KEM-1024+A256KW", Pub: pub.Pub},
		{Kty: "AKP", Alg: pub.Alg, Pub: pub.Pub[:100]},
	} {
		if _, err := NewSealer(bad); !errors.Is(err, spec.ErrUnsupported) {
			t.Errorf("%s/%d: %v", bad.Alg, len(bad.Pub), err)
		}
	}
}

// FuzzAKPTeeKey: a guest's AKP tee key either seals (and then opens with
// nothing but the right key: not tested here) or is refused with
// ErrUnsupported, never a panic.
func FuzzAKPTeeKey(f *testing.F) {
	dk, _ := mlkem.NewDecapsulationKey768(make([]byte, mlkem.SeedSize))
	good, _ := PublicTeeKey(dk.EncapsulationKey())
	f.Add(good.Alg, good.Pub)
	f.Add("ML-KEM-768+A192KW", "")
	f.Add("ML-KEM-768+A192KW", strings.Repeat("A", 1579))
	f.Fuzz(func(t *testing.T, alg, pub string) {
		fuzzbound.Limit(t, fuzzbound.Default)
		k := TeePubKey{Kty: "AKP", Alg: alg, Pub: pub}
		s, err := NewSealer(k)
		if err != nil {
			if !errors.Is(err, spec.ErrUnsupported) {
				t.Fatalf("refusal without ErrUnsupported: %v", err)
			}
			if _, err := k.PublicKey(); err == nil {
				t.Fatal("PublicKey accepts what NewSealer refuses")
			}
			return
		}
		if _, err := s.Seal([]byte("x")); err != nil {
			t.Fatalf("accepted key does not seal: %v", err)
		}
	})
}
