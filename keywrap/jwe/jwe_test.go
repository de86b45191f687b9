package jwe_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/containers/ocicrypt/config"
	ocijwe "github.com/containers/ocicrypt/keywrap/jwe"
	"github.com/go-jose/go-jose/v4"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/keywrap/jwe"
	"github.com/coffer-dev/coffer/keywrap/keys/keystest"
	"github.com/coffer-dev/coffer/spec"
)

var privopts = []byte(`{"symkey":"MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MTI=","digest":"sha256:00","cipheroptions":{"nonce":"MDEyMzQ1Njc4OWFiY2RlZg=="}}`)

func wrap(t *testing.T, rs ...jwe.Recipient) []byte {
	t.Helper()
	w, err := jwe.NewWrapper(rs)
	if err != nil {
		t.Fatal(err)
	}
	if w.Scheme() != "jwe" {
		t.Fatalf("scheme %q", w.Scheme())
	}
	out, err := w.Wrap(context.Background(), privopts)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func unwrap(t *testing.T, entry []byte, ks ...crypto.PrivateKey) ([]byte, error) {
	t.Helper()
	u, err := jwe.NewUnwrapper(ks...)
	if err != nil {
		t.Fatal(err)
	}
	return u.Unwrap(context.Background(), entry)
}

type header struct {
	Alg string `json:"alg"`
	Enc string `json:"enc"`
	Kid string `json:"kid"`
}

// shape decodes a full-serialized JWE: the protected header and the
// per-recipient headers.
func shape(t *testing.T, entry []byte) (prot header, recips []header, flattened bool) {
	t.Helper()
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(entry, &raw); err != nil {
		t.Fatalf("entry is not JSON: %v", err)
	}
	obj, err := jwe.Parse(entry)
	if err != nil {
		t.Fatal(err)
	}
	prot = header{Alg: obj.Header.Algorithm, Enc: string(obj.Header.ExtraHeaders["enc"].(string)), Kid: obj.Header.KeyID}
	if r, ok := raw["recipients"]; ok {
		var rs []struct {
			Header header `json:"header"`
		}
		if err := json.Unmarshal(r, &rs); err != nil {
			t.Fatal(err)
		}
		for _, x := range rs {
			recips = append(recips, x.Header)
		}
		return prot, recips, false
	}
	if _, ok := raw["encrypted_key"]; !ok {
		t.Fatal("flattened JWE without encrypted_key")
	}
	return prot, nil, true
}

func TestRoundTripPerKeyType(t *testing.T) {
	rk := keystest.RSA(t, 0)
	tests := []struct {
		name    string
		priv    crypto.PrivateKey
		pub     crypto.PublicKey
		alg     string
		wantAlg string
	}{
		{"rsa default", rk, rk.Public(), "", "RSA-OAEP"},
		{"rsa jwk RSA-OAEP-256", rk, rk.Public(), "RSA-OAEP-256", "RSA-OAEP-256"},
	}
	for _, c := range keystest.Curves {
		ek := keystest.EC(t, c)
		tests = append(tests, struct {
			name    string
			priv    crypto.PrivateKey
			pub     crypto.PublicKey
			alg     string
			wantAlg string
		}{"ec " + c.Params().Name, ek, ek.Public(), "", "ECDH-ES+A256KW"})
		for _, a := range []string{"ECDH-ES+A128KW", "ECDH-ES+A192KW"} {
			tests = append(tests, struct {
				name    string
				priv    crypto.PrivateKey
				pub     crypto.PublicKey
				alg     string
				wantAlg string
			}{"ec " + c.Params().Name + " " + a, ek, ek.Public(), a, a})
		}
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			entry := wrap(t, jwe.Recipient{Key: tc.pub, Algorithm: tc.alg, KeyID: "kid-1"})
			prot, recips, flat := shape(t, entry)
			if !flat || recips != nil {
				t.Fatalf("one recipient: got general JSON, want flattened")
			}
			if prot.Enc != "A256GCM" {
				t.Errorf("got enc %q, want A256GCM", prot.Enc)
			}
			lines, err := jwe.Describe(entry)
			if err != nil {
				t.Fatal(err)
			}
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "alg="+tc.wantAlg+" enc=A256GCM") || !strings.HasSuffix(lines[0], "kid=kid-1") {
				t.Errorf("Describe: got %q, want alg=%s enc=A256GCM … kid=kid-1", lines, tc.wantAlg)
			}
			got, err := unwrap(t, entry, tc.priv)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, privopts) {
				t.Fatalf("got %q, want %q", got, privopts)
			}
		})
	}
}

func TestMultiRecipientOneObject(t *testing.T) {
	r0, r1 := keystest.RSA(t, 0), keystest.RSA(t, 1)
	ek := keystest.EC(t, elliptic.P256())
	entry := wrap(t,
		jwe.Recipient{Key: r0.Public()},
		jwe.Recipient{Key: ek.Public(), KeyID: "ec"},
		jwe.Recipient{Key: r1.Public(), Algorithm: "RSA-OAEP-256"},
	)
	_, recips, flat := shape(t, entry)
	if flat {
		t.Fatal("three recipients: got flattened, want general JSON")
	}
	wantAlgs := []string{"RSA-OAEP", "ECDH-ES+A256KW", "RSA-OAEP-256"}
	if len(recips) != len(wantAlgs) {
		t.Fatalf("got %d recipients, want %d", len(recips), len(wantAlgs))
	}
	for i, r := range recips {
		if r.Alg != wantAlgs[i] {
			t.Errorf("recipient %d: got alg %q, want %q", i, r.Alg, wantAlgs[i])
		}
	}
	lines, err := jwe.Describe(entry)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"alg=RSA-OAEP enc=A256GCM", "alg=ECDH-ES+A256KW enc=A256GCM epk=P-256 kid=ec", "alg=RSA-OAEP-256 enc=A256GCM"}
	if fmt.Sprint(lines) != fmt.Sprint(want) {
		t.Errorf("Describe: got %q, want %q", lines, want)
	}
	for i, k := range []crypto.PrivateKey{r0, ek, r1} {
		got, err := unwrap(t, entry, k)
		if err != nil || !bytes.Equal(got, privopts) {
			t.Errorf("recipient %d: got %q, %v", i, got, err)
		}
	}
	// The first key that fits wins, whatever the order.
	if got, err := unwrap(t, entry, keystest.EC(t, elliptic.P384()), r1); err != nil || !bytes.Equal(got, privopts) {
		t.Errorf("second key: got %q, %v", got, err)
	}
}

func TestWrongKeyIsErrNoKey(t *testing.T) {
	entry := wrap(t, jwe.Recipient{Key: keystest.RSA(t, 0).Public()}, jwe.Recipient{Key: keystest.EC(t, elliptic.P256()).Public()})
	for _, k := range []crypto.PrivateKey{keystest.RSA(t, 1), keystest.EC(t, elliptic.P256()), keystest.EC(t, elliptic.P521())} {
		_, err := unwrap(t, entry, k)
		if !errors.Is(err, spec.ErrNoKey) {
			t.Errorf("%T: got %v, want ErrNoKey", k, err)
		}
	}
	if _, err := unwrap(t, entry); !errors.Is(err, spec.ErrNoKey) {
		t.Errorf("no keys: got %v, want ErrNoKey", err)
	}
}

func TestTamperedEntry(t *testing.T) {
	rk := keystest.RSA(t, 0)
	entry := wrap(t, jwe.Recipient{Key: rk.Public()})
	var m map[string]any
	if err := json.Unmarshal(entry, &m); err != nil {
		t.Fatal(err)
	}
	ct := []byte(m["ciphertext"].(string))
	ct[0] ^= 1
	if ct[0] == '-' || ct[0] == '_' {
		ct[0] = 'A'
	}
	m["ciphertext"] = string(ct)
	bad, _ := json.Marshal(m)
	if _, err := unwrap(t, bad, rk); err == nil {
		t.Fatal("tampered ciphertext: no error")
	}
}

func TestUnwrapAcceptsAllContentEncryptions(t *testing.T) {
	rk := keystest.RSA(t, 0)
	ek := keystest.EC(t, elliptic.P384())
	encs := []jose.ContentEncryption{jose.A128GCM, jose.A192GCM, jose.A256GCM, jose.A128CBC_HS256, jose.A192CBC_HS384, jose.A256CBC_HS512}
	for _, enc := range encs {
		for _, rc := range []struct {
			alg  jose.KeyAlgorithm
			pub  any
			priv crypto.PrivateKey
		}{{jose.RSA_OAEP, rk.Public(), rk}, {jose.RSA_OAEP_256, rk.Public(), rk}, {jose.ECDH_ES_A128KW, ek.Public(), ek}, {jose.ECDH_ES_A256KW, ek.Public(), ek}} {
			e, err := jose.NewEncrypter(enc, jose.Recipient{Algorithm: rc.alg, Key: rc.pub}, nil)
			if err != nil {
				t.Fatal(err)
			}
			obj, err := e.Encrypt(privopts)
			if err != nil {
				t.Fatal(err)
			}
			compact, err := obj.CompactSerialize()
			if err != nil {
				t.Fatal(err)
			}
			for form, s := range map[string]string{"full": obj.FullSerialize(), "compact": compact} {
				got, err := unwrap(t, []byte(s), rc.priv)
				if err != nil || !bytes.Equal(got, privopts) {
					t.Errorf("%s %s %s: got %q, %v", rc.alg, enc, form, got, err)
				}
			}
		}
	}
}

func TestRejectsOtherAlgorithms(t *testing.T) {
	rk := keystest.RSA(t, 0)
	e, err := jose.NewEncrypter(jose.A256GCM, jose.Recipient{Algorithm: jose.RSA1_5, Key: rk.Public()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	obj, _ := e.Encrypt(privopts)
	if _, err := unwrap(t, []byte(obj.FullSerialize()), rk); !errors.Is(err, spec.ErrUnsupported) {
		t.Errorf("RSA1_5 entry: got %v, want ErrUnsupported", err)
	}
	if _, err := jwe.Describe([]byte(obj.FullSerialize())); !errors.Is(err, spec.ErrUnsupported) {
		t.Errorf("Describe RSA1_5 entry: got %v, want ErrUnsupported", err)
	}
	for _, s := range []string{"", "{}", "not a jwe", `{"protected":"e30","ciphertext":"AA"}`} {
		if _, err := unwrap(t, []byte(s), rk); !errors.Is(err, spec.ErrUnsupported) {
			t.Errorf("%q: got %v, want ErrUnsupported", s, err)
		}
	}
}

func TestNewWrapperRejects(t *testing.T) {
	rk := keystest.RSA(t, 0)
	ek := keystest.EC(t, elliptic.P256())
	_, edpriv := ed25519Key(t)
	tests := []struct {
		name string
		r    jwe.Recipient
	}{
		{"rsa with ecdh alg", jwe.Recipient{Key: rk.Public(), Algorithm: "ECDH-ES+A256KW"}},
		{"ec with rsa alg", jwe.Recipient{Key: ek.Public(), Algorithm: "RSA-OAEP"}},
		{"rsa1_5", jwe.Recipient{Key: rk.Public(), Algorithm: "RSA1_5"}},
		{"direct ecdh-es", jwe.Recipient{Key: ek.Public(), Algorithm: "ECDH-ES"}},
		{"ed25519", jwe.Recipient{Key: edpriv.Public()}},
		{"nil", jwe.Recipient{}},
	}
	for _, tc := range tests {
		if _, err := jwe.NewWrapper([]jwe.Recipient{tc.r}); !errors.Is(err, spec.ErrUnsupported) {
			t.Errorf("%s: got %v, want ErrUnsupported", tc.name, err)
		}
	}
	if _, err := jwe.NewWrapper(nil); err == nil {
		t.Error("no recipients: no error")
	}
	if _, err := jwe.NewUnwrapper(edpriv); !errors.Is(err, spec.ErrUnsupported) {
		t.Errorf("ed25519 unwrap key: got %v", err)
	}
}

// decrypterOnly hides *rsa.PrivateKey behind crypto.Decrypter, like an HSM key.
type decrypterOnly struct{ k *rsa.PrivateKey }

func (d decrypterOnly) Public() crypto.PublicKey { return d.k.Public() }
func (d decrypterOnly) Decrypt(r io.Reader, msg []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	return d.k.Decrypt(r, msg, opts)
}

func TestOpaqueDecrypter(t *testing.T) {
	rk := keystest.RSA(t, 0)
	for _, alg := range []string{"RSA-OAEP", "RSA-OAEP-256"} {
		entry := wrap(t, jwe.Recipient{Key: rk.Public(), Algorithm: alg})
		got, err := unwrap(t, entry, decrypterOnly{rk})
		if err != nil || !bytes.Equal(got, privopts) {
			t.Errorf("%s: got %q, %v", alg, got, err)
		}
		if _, err := unwrap(t, entry, decrypterOnly{keystest.RSA(t, 1)}); !errors.Is(err, spec.ErrNoKey) {
			t.Errorf("%s wrong opaque key: got %v, want ErrNoKey", alg, err)
		}
	}
}

func TestJWKPrivateKey(t *testing.T) {
	ek := keystest.EC(t, elliptic.P256())
	entry := wrap(t, jwe.Recipient{Key: ek.Public()})
	got, err := unwrap(t, entry, &jose.JSONWebKey{Key: ek})
	if err != nil || !bytes.Equal(got, privopts) {
		t.Fatalf("got %q, %v", got, err)
	}
}

// Interop with the reference implementation (containers/ocicrypt), both ways.
func TestOcicryptInterop(t *testing.T) {
	rk := keystest.RSA(t, 0)
	ek := keystest.EC(t, elliptic.P256())
	keysets := []struct {
		name string
		priv crypto.PrivateKey
		pub  any
	}{{"rsa", rk, rk.Public()}, {"ec", ek, ek.Public()}}
	for _, ks := range keysets {
		pubPEM := keystest.PEM("PUBLIC KEY", keystest.PKIX(t, ks.pub))
		privPEM := keystest.PEM("PRIVATE KEY", keystest.PKCS8(t, ks.priv))
		t.Run(ks.name+" ocicrypt wraps, coffer unwraps", func(t *testing.T) {
			cc, err := config.EncryptWithJwe([][]byte{pubPEM})
			if err != nil {
				t.Fatal(err)
			}
			entry, err := ocijwe.NewKeyWrapper().WrapKeys(cc.EncryptConfig, privopts)
			if err != nil {
				t.Fatal(err)
			}
			got, err := unwrap(t, entry, ks.priv)
			if err != nil || !bytes.Equal(got, privopts) {
				t.Fatalf("got %q, %v", got, err)
			}
		})
		t.Run(ks.name+" coffer wraps, ocicrypt unwraps", func(t *testing.T) {
			other := keystest.RSA(t, 1)
			entry := wrap(t, jwe.Recipient{Key: other.Public()}, jwe.Recipient{Key: ks.pub})
			cc, err := config.DecryptWithPrivKeys([][]byte{privPEM}, [][]byte{nil})
			if err != nil {
				t.Fatal(err)
			}
			got, err := ocijwe.NewKeyWrapper().UnwrapKey(cc.DecryptConfig, entry)
			if err != nil || !bytes.Equal(got, privopts) {
				t.Fatalf("got %q, %v", got, err)
			}
			// And single recipient (flattened form).
			entry = wrap(t, jwe.Recipient{Key: ks.pub})
			got, err = ocijwe.NewKeyWrapper().UnwrapKey(cc.DecryptConfig, entry)
			if err != nil || !bytes.Equal(got, privopts) {
				t.Fatalf("flattened: got %q, %v", got, err)
			}
		})
	}
	// Same multi-recipient shape as ocicrypt: general JSON, recipients in
	// order, shared protected header with enc only.
	cc, err := config.EncryptWithJwe([][]byte{
		keystest.PEM("PUBLIC KEY", keystest.PKIX(t, rk.Public())),
		keystest.PEM("PUBLIC KEY", keystest.PKIX(t, ek.Public())),
	})
	if err != nil {
		t.Fatal(err)
	}
	ref, err := ocijwe.NewKeyWrapper().WrapKeys(cc.EncryptConfig, privopts)
	if err != nil {
		t.Fatal(err)
	}
	ours := wrap(t, jwe.Recipient{Key: rk.Public()}, jwe.Recipient{Key: ek.Public()})
	if a, b := topKeys(t, ref), topKeys(t, ours); a != b {
		t.Errorf("top-level members: ocicrypt %s, coffer %s", a, b)
	}
	la, _ := jwe.Describe(ref)
	lb, _ := jwe.Describe(ours)
	if fmt.Sprint(la) != fmt.Sprint(lb) {
		t.Errorf("recipients: ocicrypt %q, coffer %q", la, lb)
	}
}

func topKeys(t *testing.T, b []byte) string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return fmt.Sprint(ks)
}

func ed25519Key(t *testing.T) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func FuzzUnwrapEntry(f *testing.F) {
	rk := keystest.RSA(f, 0)
	ek := keystest.EC(f, elliptic.P256())
	w, err := jwe.NewWrapper([]jwe.Recipient{{Key: rk.Public()}, {Key: ek.Public(), KeyID: "x"}})
	if err != nil {
		f.Fatal(err)
	}
	multi, _ := w.Wrap(context.Background(), privopts)
	w1, _ := jwe.NewWrapper([]jwe.Recipient{{Key: ek.Public()}})
	single, _ := w1.Wrap(context.Background(), privopts)
	f.Add(multi)
	f.Add(single)
	f.Add([]byte("eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.AA.AA.AA.AA"))
	f.Add([]byte(`{"protected":"e30","recipients":[{"header":{"alg":"RSA-OAEP"}}],"ciphertext":"AA","iv":"AA","tag":"AA"}`))
	u, err := jwe.NewUnwrapper(rk, ek)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, entry []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		pt, err := u.Unwrap(context.Background(), entry)
		if err == nil && !bytes.Equal(pt, privopts) {
			// Only a valid encryption to our keys can decrypt; the seeds
			// carry privopts, and random input must not yield anything else
			// unless it is itself a well-formed JWE to our keys.
			if _, perr := jwe.Parse(entry); perr != nil {
				t.Fatalf("Unwrap succeeded on input Parse rejects: %v", perr)
			}
		}
		lines, derr := jwe.Describe(entry)
		if derr == nil && len(lines) == 0 {
			t.Fatal("Describe: no error and no recipients")
		}
		if err == nil && derr != nil {
			t.Fatalf("Unwrap accepted an entry Describe rejects: %v", derr)
		}
	})
}
