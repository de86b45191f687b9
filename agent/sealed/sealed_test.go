package sealed_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/agent/sealed"
	"github.com/coffer-dev/coffer/spec"
)

type broker map[string][]byte

func (b broker) get(_ context.Context, uri string) ([]byte, error) {
	if v, ok := b[uri]; ok {
		return append([]byte(nil), v...), nil
	}
	return nil, spec.ErrNotFound
}

func setup(t *testing.T) (*ecdsa.PrivateKey, broker, []byte) {
	t.Helper()
	priv, pub, err := sealed.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	key, err := sealed.ParseSigningKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	kek := make([]byte, 32)
	rand.Read(kek)
	return key, broker{"kbs:///default/sealed-secret/key1": pub, "kbs:///default/kek/app": kek}, kek
}

// An envelope secret unseals with the broker's KEK, and is refused with
// another KEK, a changed ciphertext (re-signed: the AEAD catches it), an
// unknown provider, bad wrap types and ivs.
func TestEnvelopeSecret(t *testing.T) {
	ctx := context.Background()
	key, b, kek := setup(t)
	u := sealed.Unsealer{Resource: b.get}
	seal := func(s sealed.Secret) []byte {
		out, err := sealed.Seal(s, key, "kbs:///default/sealed-secret/key1")
		if err != nil {
			t.Fatal(err)
		}
		return []byte(out)
	}
	env, err := sealed.SealEnvelope([]byte("s3cret data"), "kbs", "kbs:///default/kek/app", kek)
	if err != nil {
		t.Fatal(err)
	}
	if env.Type != "envelope" || env.WrapType != "A256GCM" || env.KeyID != "kbs:///default/kek/app" {
		t.Fatalf("envelope = %+v", env)
	}
	if strings.Contains(env.EncryptedData, base64.StdEncoding.EncodeToString([]byte("s3cret"))) {
		t.Fatal("plaintext visible in the envelope")
	}
	pt, err := u.Unseal(ctx, seal(env))
	if err != nil || string(pt) != "s3cret data" {
		t.Fatalf("unseal = %q, %v", pt, err)
	}
	// The provider name is case-insensitive, as guest-components' is.
	up := env
	up.Provider = "KBS"
	if pt, err := u.Unseal(ctx, seal(up)); err != nil || string(pt) != "s3cret data" {
		t.Errorf("provider KBS: %q, %v", pt, err)
	}

	other := make([]byte, 32)
	rand.Read(other)
	wrongKEK := sealed.Unsealer{Resource: broker{"kbs:///default/sealed-secret/key1": b["kbs:///default/sealed-secret/key1"], "kbs:///default/kek/app": other}.get}
	if _, err := wrongKEK.Unseal(ctx, seal(env)); !errors.Is(err, spec.ErrNoKey) {
		t.Errorf("another KEK: %v, want ErrNoKey", err)
	}

	data, _ := base64.StdEncoding.DecodeString(env.EncryptedData)
	data[0] ^= 1
	bad := env
	bad.EncryptedData = base64.StdEncoding.EncodeToString(data)
	if _, err := u.Unseal(ctx, seal(bad)); !errors.Is(err, spec.ErrIntegrity) {
		t.Errorf("changed ciphertext: %v, want ErrIntegrity", err)
	}

	for name, mut := range map[string]func(*sealed.Secret){
		"aliyun":       func(s *sealed.Secret) { s.Provider = "aliyun" },
		"wrap type":    func(s *sealed.Secret) { s.WrapType = "A128GCM" },
		"short iv":     func(s *sealed.Secret) { s.IV = "AAAA" },
		"not base64":   func(s *sealed.Secret) { s.EncryptedKey = "!!" },
		"key id":       func(s *sealed.Secret) { s.KeyID = "file:///etc/shadow" },
		"short key":    func(s *sealed.Secret) { s.EncryptedKey = base64.StdEncoding.EncodeToString([]byte("short")) },
		"no such type": func(s *sealed.Secret) { s.Type = "plain" },
	} {
		s := env
		mut(&s)
		var raw []byte
		if name == "no such type" {
			// Seal refuses unknown types; forge the payload by hand.
			raw = forge(t, key, s)
		} else {
			raw = seal(s)
		}
		_, err := u.Unseal(ctx, raw)
		if err == nil {
			t.Errorf("%s: unsealed", name)
			continue
		}
		if name == "aliyun" {
			if !errors.Is(err, sealed.ErrNoProvider) || !strings.Contains(err.Error(), "aliyun") {
				t.Errorf("aliyun: %v", err)
			}
		} else if !errors.Is(err, sealed.ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}

	// A256CTR (guest-components' other wrap type) decrypts too.
	ctr := ctrEnvelope(t, kek, []byte("ctr secret"))
	if pt, err := u.Unseal(ctx, seal(ctr)); err != nil || string(pt) != "ctr secret" {
		t.Errorf("A256CTR: %q, %v", pt, err)
	}
}

func forge(t *testing.T, key *ecdsa.PrivateKey, s sealed.Secret) []byte {
	t.Helper()
	real := s
	real.Type = "vault"
	out, _ := sealed.Seal(real, key, "kbs:///default/sealed-secret/key1")
	// Re-sign a payload with the unknown type through the same key.
	parts := strings.Split(strings.TrimPrefix(out, "sealed."), ".")
	p, _ := json.Marshal(s)
	parts[1] = base64.RawURLEncoding.EncodeToString(p)
	return []byte(resign(t, key, parts[0], parts[1]))
}

// ctrEnvelope builds an A256CTR envelope the way guest-components' secret
// CLI would (the DEK under the KEK with A256KW, the coffer kbs provider).
func ctrEnvelope(t *testing.T, kek, pt []byte) sealed.Secret {
	t.Helper()
	s, err := sealed.SealEnvelope(pt, "kbs", "kbs:///default/kek/app", kek)
	if err != nil {
		t.Fatal(err)
	}
	dek := unwrapForTest(t, kek, s.EncryptedKey)
	iv := make([]byte, 16)
	rand.Read(iv)
	s.WrapType, s.IV, s.EncryptedData = "A256CTR", base64.StdEncoding.EncodeToString(iv), base64.StdEncoding.EncodeToString(ctrXOR(dek, iv, pt))
	return s
}

// An unsealer with no broker refuses a kbs secret clearly.
func TestNoBroker(t *testing.T) {
	key, b, _ := setup(t)
	s, _ := sealed.Seal(sealed.Secret{Type: "vault", Provider: "kbs", Name: "kbs:///default/app/pw"}, key, "local.jwk")
	dir := t.TempDir()
	writeFile(t, dir+"/local.jwk", b["kbs:///default/sealed-secret/key1"])
	_, err := sealed.Unsealer{KeysDir: dir}.Unseal(context.Background(), []byte(s))
	if !errors.Is(err, spec.ErrUnsupported) || !strings.Contains(err.Error(), "no broker") {
		t.Errorf("no broker: %v", err)
	}
	// A kid outside the key directory is refused.
	s2, _ := sealed.Seal(sealed.Secret{Type: "vault", Provider: "kbs", Name: "kbs:///default/app/pw"}, key, "../local.jwk")
	if _, err := (sealed.Unsealer{KeysDir: dir}).Unseal(context.Background(), []byte(s2)); err == nil {
		t.Error("kid ../local.jwk accepted")
	}
}

// FuzzParseSealed: a sealed secret comes from the pod spec (the host).
// Oracle: only what the key signed parses (a forgery never yields another
// secret), no panic, within a second.
func FuzzParseSealed(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good, _ := sealed.Seal(sealed.Secret{Type: "vault", Provider: "kbs", Name: "kbs:///default/app/password"}, key, "kbs:///default/k/1")
	f.Add(good)
	f.Add("sealed.fakejwsheader.eyJ2ZXJzaW9uIjoiMC4xLjAifQ.fakesignature")
	f.Add("sealed....")
	f.Add("")
	verify := func(context.Context, string) (*ecdsa.PublicKey, error) { return &key.PublicKey, nil }
	f.Fuzz(func(t *testing.T, in string) {
		start := time.Now()
		sec, err := sealed.ParseSealed(context.Background(), []byte(in), verify)
		if err == nil && in != good {
			// Only possible for a re-encoding the signature still covers:
			// the payload then decodes to the same secret.
			if sec.Name != "kbs:///default/app/password" {
				t.Fatalf("forged secret accepted: %+v", sec)
			}
		}
		if time.Since(start) > time.Second {
			t.Fatalf("one input took %v", time.Since(start))
		}
	})
}

// FuzzUnsealEnvelope: every field of a signed envelope is the sealer's,
// but a sealer is not trusted to be well-formed: no panic, no plaintext
// from a mangled envelope, within a second.
func FuzzUnsealEnvelope(f *testing.F) {
	priv, pub, _ := sealed.GenerateSigningKey()
	key, _ := sealed.ParseSigningKey(priv)
	kek := make([]byte, 32)
	b := broker{"kbs:///k/s/v": pub, "kbs:///default/kek/app": kek}
	env, _ := sealed.SealEnvelope([]byte("x"), "kbs", "kbs:///default/kek/app", kek)
	f.Add(env.EncryptedKey, env.IV, env.EncryptedData, env.WrapType)
	f.Add("", "", "", "A256CTR")
	u := sealed.Unsealer{Resource: b.get}
	f.Fuzz(func(t *testing.T, ek, iv, data, wrap string) {
		start := time.Now()
		s := env
		s.EncryptedKey, s.IV, s.EncryptedData, s.WrapType = ek, iv, data, wrap
		raw, err := sealed.Seal(s, key, "kbs:///k/s/v")
		if err != nil {
			return
		}
		pt, err := u.Unseal(context.Background(), []byte(raw))
		if err == nil && wrap == "A256GCM" && string(pt) != "x" {
			t.Fatalf("GCM envelope unsealed to %q", pt)
		}
		if time.Since(start) > time.Second {
			t.Fatalf("one input took %v", time.Since(start))
		}
	})
}
