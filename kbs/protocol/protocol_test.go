package protocol

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"unicode/utf8"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/spec"
)

func TestReportDataDigest(t *testing.T) {
	pub := TeePubKey{Kty: "EC", Alg: KeyAlgECDHESA256KW, Crv: "P-256", X: "xx", Y: "yy"}
	got, err := ReportDataDigest("bm9uY2U=", pub, "")
	if err != nil {
		t.Fatal(err)
	}
	want := sha512.Sum384([]byte(`{"additional-evidence":"","nonce":"bm9uY2U=","tee-pubkey":{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"xx","y":"yy"}}`))
	if string(got) != string(want[:]) {
		t.Fatalf("digest: got %x, want %x", got, want)
	}
	rd := ReportData(got, 64)
	if len(rd) != 64 || string(rd[:48]) != string(got) || rd[63] != 0 {
		t.Fatalf("ReportData: got %x", rd)
	}
	if got := ReportData(got, 32); string(got) != string(want[:32]) {
		t.Fatalf("ReportData truncate: got %x", got)
	}
}

func TestProtectedHeaderAADVector(t *testing.T) {
	got, err := SerializeProtectedHeader("fakealg", "fakeenc", nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "eyJhbGciOiJmYWtlYWxnIiwiZW5jIjoiZmFrZWVuYyJ9"; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	got, _ = SerializeProtectedHeader("A", "B", map[string]any{"zz": 1, "epk": map[string]string{"y": "1", "crv": "P"}, "aa": "x"})
	dec, _ := base64.RawURLEncoding.DecodeString(got)
	if want := `{"alg":"A","enc":"B","aa":"x","epk":{"crv":"P","y":"1"},"zz":1}`; string(dec) != want {
		t.Fatalf("got %s, want %s", dec, want)
	}
}

// reserialize mimics the reference client: parse the header into alg, enc
// and a sorted map of the rest, and serialize it again.
func reserialize(t *testing.T, protected string) string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(protected)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	alg, enc := m["alg"].(string), m["enc"].(string)
	delete(m, "alg")
	delete(m, "enc")
	s, err := SerializeProtectedHeader(alg, enc, m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSealOpen(t *testing.T) {
	ec256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	tests := []struct {
		name    string
		priv    any
		pub     any
		alg     string
		joseAlg jose.KeyAlgorithm
	}{
		{"P-256", ec256, &ec256.PublicKey, KeyAlgECDHESA256KW, jose.ECDH_ES_A256KW},
		{"P-521", ec521, &ec521.PublicKey, KeyAlgECDHESA256KW, jose.ECDH_ES_A256KW},
		{"RSA-OAEP-256", rsaKey, &rsaKey.PublicKey, KeyAlgRSAOAEP256, jose.RSA_OAEP_256},
		{"RSA1_5", rsaKey, &rsaKey.PublicKey, KeyAlgRSA15, jose.RSA1_5},
	}
	secret := []byte("0123456789abcdef0123456789abcdef")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub, err := PublicTeeKey(tt.pub)
			if err != nil {
				t.Fatal(err)
			}
			pub.Alg = tt.alg
			// Round-trip through JSON as a client would send it.
			var sent TeePubKey
			raw, _ := json.Marshal(pub)
			if err := json.Unmarshal(raw, &sent); err != nil {
				t.Fatal(err)
			}
			resp, err := Seal(sent, secret)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Open(tt.priv, resp)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(secret) {
				t.Fatalf("Open: got %q, want %q", got, secret)
			}
			if again := reserialize(t, resp.Protected); again != resp.Protected {
				t.Fatalf("re-serialized header %s differs from %s", again, resp.Protected)
			}
			// Independent consumer: go-jose.
			body, _ := json.Marshal(resp)
			obj, err := jose.ParseEncryptedJSON(string(body), []jose.KeyAlgorithm{tt.joseAlg}, []jose.ContentEncryption{jose.A256GCM})
			if err != nil {
				t.Fatalf("go-jose parse: %v", err)
			}
			got, err = obj.Decrypt(tt.priv)
			if err != nil {
				t.Fatalf("go-jose decrypt: %v", err)
			}
			if string(got) != string(secret) {
				t.Fatalf("go-jose: got %q, want %q", got, secret)
			}
			// Tampering with any part fails with ErrIntegrity.
			for _, mut := range []func(r *Response){
				func(r *Response) { r.Tag = flip(r.Tag) },
				func(r *Response) { r.Ciphertext = flip(r.Ciphertext) },
				func(r *Response) { r.IV = flip(r.IV) },
				func(r *Response) { r.EncryptedKey = flip(r.EncryptedKey) },
			} {
				bad := *resp
				mut(&bad)
				if _, err := Open(tt.priv, &bad); !errors.Is(err, spec.ErrIntegrity) {
					t.Errorf("tampered Open: got %v, want ErrIntegrity", err)
				}
			}
		})
	}
}

func flip(s string) string {
	b, _ := base64.RawURLEncoding.DecodeString(s)
	b[0] ^= 1
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestOpenWrongKey(t *testing.T) {
	k1, pub1, _ := GenerateTeeKey()
	k2, _, _ := GenerateTeeKey()
	resp, err := Seal(pub1, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(k1, resp); err != nil {
		t.Fatalf("right key: %v", err)
	}
	if _, err := Open(k2, resp); !errors.Is(err, spec.ErrIntegrity) {
		t.Fatalf("wrong key: got %v, want ErrIntegrity", err)
	}
}

func TestSealRejects(t *testing.T) {
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	smallPub, _ := PublicTeeKey(&small.PublicKey)
	_, ecPub, _ := GenerateTeeKey()
	offCurve := ecPub
	offCurve.Y = offCurve.X
	tests := map[string]TeePubKey{
		"rsa1024":   smallPub,
		"off-curve": offCurve,
		"oct":       {Kty: "oct"},
		"ec alg":    {Kty: "EC", Alg: "ECDH-ES", Crv: "P-256", X: ecPub.X, Y: ecPub.Y},
		"secp256k1": {Kty: "EC", Crv: "secp256k1", X: ecPub.X, Y: ecPub.Y},
	}
	for name, k := range tests {
		if _, err := Seal(k, []byte("x")); !errors.Is(err, spec.ErrUnsupported) {
			t.Errorf("%s: got %v, want ErrUnsupported", name, err)
		}
	}
}

func TestErrorInfo(t *testing.T) {
	e := NewError(ErrPolicyDeny, "denied by resource policy")
	raw, _ := json.Marshal(e)
	if want := `{"type":"https://github.com/confidential-containers/kbs/errors/PolicyDeny","detail":"denied by resource policy"}`; string(raw) != want {
		t.Fatalf("got %s, want %s", raw, want)
	}
	if e.Variant() != ErrPolicyDeny {
		t.Fatalf("Variant: got %q", e.Variant())
	}
}

func TestAttestationJSON(t *testing.T) {
	in := `{"init-data":{"format":"toml","body":"x"},"runtime-data":{"nonce":"n","tee-pubkey":{"kty":"EC","alg":"ECDH-ES+A256KW","crv":"P-256","x":"a","y":"b"}},"tee-evidence":{"primary_evidence":{"svn":"1"},"additional_evidence":""}}`
	var a Attestation
	if err := json.Unmarshal([]byte(in), &a); err != nil {
		t.Fatal(err)
	}
	if a.InitData.Format != "toml" || a.RuntimeData.Nonce != "n" || a.RuntimeData.TeePubKey.Crv != "P-256" || string(a.TeeEvidence.PrimaryEvidence) != `{"svn":"1"}` {
		t.Fatalf("decoded %+v", a)
	}
	out, _ := json.Marshal(a)
	if string(out) != in {
		t.Fatalf("re-encoded:\n got %s\nwant %s", out, in)
	}
}

func FuzzOpen(f *testing.F) {
	priv, pub, _ := GenerateTeeKey()
	resp, _ := Seal(pub, []byte("secret"))
	raw, _ := json.Marshal(resp)
	f.Add(raw)
	f.Add([]byte(`{"protected":"eyJhbGciOiJmYWtlYWxnIiwiZW5jIjoiZmFrZWVuYyJ9"}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		var r Response
		if json.Unmarshal(in, &r) != nil {
			return
		}
		// One message was sealed: anything that opens must be it.
		if pt, err := Open(priv, &r); err == nil && string(pt) != "secret" {
			t.Fatalf("opened %q from a response nobody sealed", pt)
		}
	})
}

func TestSealerReuse(t *testing.T) {
	priv, pub, _ := GenerateTeeKey()
	s, err := NewSealer(pub)
	if err != nil {
		t.Fatal(err)
	}
	r1, _ := s.Seal([]byte("one"))
	r2, _ := s.Seal([]byte("two"))
	if r1.Protected != r2.Protected || r1.EncryptedKey == r2.EncryptedKey || r1.IV == r2.IV {
		t.Fatalf("want same header, fresh content key and iv: %+v %+v", r1, r2)
	}
	for want, r := range map[string]*Response{"one": r1, "two": r2} {
		if got, err := Open(priv, r); err != nil || string(got) != want {
			t.Fatalf("Open: got %q, %v; want %q", got, err, want)
		}
	}
	// Swapping the encrypted keys of two responses fails.
	r1.EncryptedKey = r2.EncryptedKey
	if _, err := Open(priv, r1); !errors.Is(err, spec.ErrIntegrity) {
		t.Fatalf("swapped key: got %v", err)
	}
}

func TestOpener(t *testing.T) {
	priv, pub, _ := GenerateTeeKey()
	o, err := NewOpener(priv)
	if err != nil {
		t.Fatal(err)
	}
	// Many sealers (more than the cache holds), several responses each, interleaved.
	var sealers []*Sealer
	for range openerCache + 4 {
		s, _ := NewSealer(pub)
		sealers = append(sealers, s)
	}
	for round := range 3 {
		for i, s := range sealers {
			want := fmt.Sprintf("r%d-s%d", round, i)
			r, _ := s.Seal([]byte(want))
			if got, err := o.Open(r); err != nil || string(got) != want {
				t.Fatalf("Open: got %q, %v; want %q", got, err, want)
			}
		}
	}
	if len(o.keks) > openerCache {
		t.Fatalf("cache grew to %d", len(o.keks))
	}
	// A forged response reusing a cached header still needs the right key wrap.
	r, _ := sealers[len(sealers)-1].Seal([]byte("x"))
	r.EncryptedKey = b64.EncodeToString(make([]byte, 40))
	if _, err := o.Open(r); !errors.Is(err, spec.ErrIntegrity) {
		t.Fatalf("forged key: got %v", err)
	}
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ro, _ := NewOpener(rsaKey)
	r, _ = sealers[0].Seal([]byte("x"))
	if _, err := ro.Open(r); !errors.Is(err, spec.ErrNoKey) {
		t.Fatalf("rsa opener on ec response: got %v, want ErrNoKey", err)
	}
	if _, err := NewOpener("not a key"); !errors.Is(err, spec.ErrUnsupported) {
		t.Fatalf("NewOpener(string): got %v", err)
	}
}

func TestReportDataJSONIsCanonical(t *testing.T) {
	_, ec, _ := GenerateTeeKey()
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	rpub, _ := PublicTeeKey(&rk.PublicKey)
	for _, tt := range []struct {
		nonce, add string
		pub        TeePubKey
	}{
		{"bm9uY2U=", "", ec},
		{"n\u00e9\"\\\x01", `{"gpu":["a",1]}`, rpub},
		{"", "", TeePubKey{}},
		{"x", "\u2028<>&", TeePubKey{Kty: "EC", X: "a"}},
	} {
		want, err := CanonicalizeValue(map[string]any{"tee-pubkey": tt.pub, "nonce": tt.nonce, "additional-evidence": tt.add})
		if err != nil {
			t.Fatal(err)
		}
		if got := reportDataJSON(tt.nonce, tt.pub, tt.add); string(got) != string(want) {
			t.Errorf("got  %s\nwant %s", got, want)
		}
	}
}

func FuzzReportDataJSON(f *testing.F) {
	f.Add("nonce", "", "EC", "P-256", "x", "y")
	f.Fuzz(func(t *testing.T, nonce, add, kty, crv, x, y string) {
		fuzzbound.Limit(t, fuzzbound.Default)
		pub := TeePubKey{Kty: kty, Crv: crv, X: x, Y: y, Alg: add}
		want, err := CanonicalizeValue(map[string]any{"tee-pubkey": pub, "nonce": nonce, "additional-evidence": add})
		if err != nil {
			return // invalid UTF-8 is replaced by encoding/json; not comparable
		}
		if !utf8.ValidString(nonce + add + kty + crv + x + y) {
			return
		}
		if got := reportDataJSON(nonce, pub, add); string(got) != string(want) {
			t.Fatalf("got  %s\nwant %s", got, want)
		}
	})
}
