package protocol

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/spec"
)

func TestJCSVector(t *testing.T) {
	c, err := Canonicalize([]byte(`{"b":1,"a":"test","c":{"d":"e"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(c), `{"a":"test","b":1,"c":{"d":"e"}}`; got != want {
		t.Fatalf("canonical: got %s, want %s", got, want)
	}
	sum := sha512.Sum384(c)
	h := hex.EncodeToString(sum[:])
	if !strings.HasPrefix(h, "e71ce8e70d814ba6") || !strings.HasSuffix(h, "78870c3") {
		t.Fatalf("sha384: got %s, want e71ce8e70d814ba6…78870c3", h)
	}
}

func TestCanonicalize(t *testing.T) {
	tests := []struct{ in, want string }{
		{`  [ 1 , 2.50 , -0 , 1e21, 1E-7, 123456789012, 0.000001 ] `, `[1,2.5,0,1e+21,1e-7,123456789012,0.000001]`},
		{`{"\u20ac":1,"\r":2,"1":3,"\u00e9":4,"\ud83d\ude00":5,"\ufb33":6}`, "{\"\\r\":2,\"1\":3,\"\u00e9\":4,\"\u20ac\":1,\"\U0001F600\":5,\"\ufb33\":6}"},
		{`"a\u001fb\"c\\d\/<>"`, `"a\u001fb\"c\\d/<>"`},
		{`{"z":[true,false,null],"a":{}}`, `{"a":{},"z":[true,false,null]}`},
	}
	for _, tt := range tests {
		got, err := Canonicalize([]byte(tt.in))
		if err != nil {
			t.Fatalf("%s: %v", tt.in, err)
		}
		if string(got) != tt.want {
			t.Errorf("Canonicalize(%s): got %s, want %s", tt.in, got, tt.want)
		}
	}
	for _, bad := range []string{`{"a":1,"a":2}`, `{"a":1} x`, `{`, `1e999`} {
		if _, err := Canonicalize([]byte(bad)); err == nil {
			t.Errorf("Canonicalize(%s): got nil error, want one", bad)
		}
	}
}

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

func TestParseResourcePath(t *testing.T) {
	tests := []struct {
		in   string
		want ResourcePath
		ok   bool
	}{
		{"default/image_key/nginx", ResourcePath{"default", "image_key", "nginx"}, true},
		{"image_key/nginx", ResourcePath{"default", "image_key", "nginx"}, true},
		{"a/b/c.d-e_f", ResourcePath{"a", "b", "c.d-e_f"}, true},
		{"../b/c", ResourcePath{}, false},
		{"a/../c", ResourcePath{}, false},
		{"a/b/..", ResourcePath{}, false},
		{"a/b/.", ResourcePath{}, false},
		{"a/b/.hidden", ResourcePath{}, false},
		{"a/b/%2e%2e", ResourcePath{}, false},
		{"a/b/c%2fd", ResourcePath{}, false},
		{"a/b/c/d", ResourcePath{}, false},
		{"a//c", ResourcePath{}, false},
		{"/a/b", ResourcePath{}, false},
		{"a/b/c\x00", ResourcePath{}, false},
		{"a/b/é", ResourcePath{}, false},
		{"a/b/c\n", ResourcePath{}, false},
		{"a/b/" + strings.Repeat("x", 256), ResourcePath{}, false},
	}
	for _, tt := range tests {
		got, err := ParseResourcePath(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseResourcePath(%q): got %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
	p, err := ParseKID("kbs://example.com:8080/default/image_key/nginx")
	if err != nil || p != (ResourcePath{"default", "image_key", "nginx"}) {
		t.Fatalf("ParseKID: got %v, %v", p, err)
	}
	if _, err := ParseKID("https:///a/b/c"); err == nil {
		t.Fatal("ParseKID(https): got nil error")
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

func FuzzCanonicalize(f *testing.F) {
	for _, s := range []string{`{"b":1,"a":"test","c":{"d":"e"}}`, `[1e21,-0.5,"\u0000"]`, `{"a":{"a":[{}]}}`, `"\ud800"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		c, err := Canonicalize(in)
		if err != nil {
			return
		}
		// Canonical form is a fixed point.
		c2, err := Canonicalize(c)
		if err != nil || string(c2) != string(c) {
			t.Fatalf("not idempotent: %s -> %s (%v)", c, c2, err)
		}
	})
}

func FuzzParseResourcePath(f *testing.F) {
	for _, s := range []string{"default/image_key/nginx", "../../etc/passwd", "a/b/%2e%2e", "a/./b", "x/y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fuzzbound.Limit(t, fuzzbound.Default)
		p, err := ParseResourcePath(s)
		if err != nil {
			return
		}
		for _, seg := range []string{p.Repo, p.Type, p.Tag} {
			if seg == "" || seg == "." || seg == ".." || strings.ContainsAny(seg, "/\\%\x00") || strings.HasPrefix(seg, ".") {
				t.Fatalf("accepted dangerous segment %q in %q", seg, s)
			}
		}
	})
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

func TestParseKIDGrammar(t *testing.T) {
	tests := []struct {
		kid            string
		repo, typ, tag string
		wantErr        error // errAnyKIDKID: some error
	}{
		{kid: "kbs:///default/image_key/nginx", repo: "default", typ: "image_key", tag: "nginx"},
		{kid: "kbs://127.0.0.1:8080/r/t/v1.2", repo: "r", typ: "t", tag: "v1.2"},
		{kid: "kbs:///a-b/c_d/e.f", repo: "a-b", typ: "c_d", tag: "e.f"},
		{kid: "kbs:///a/b", wantErr: errAnyKID},
		{kid: "kbs:///a/b/c/d", wantErr: errAnyKID},
		{kid: "kbs:///a/b/c/", wantErr: errAnyKID},
		{kid: "kbs:///a//c", wantErr: errAnyKID},
		{kid: "kbs:///a/../c", wantErr: errAnyKID},
		{kid: "kbs:///a/.b/c", wantErr: errAnyKID},
		{kid: "kbs:///a/b/c?version=2", wantErr: errAnyKID},
		{kid: "kbs:///a/b/c#x", wantErr: errAnyKID},
		{kid: "kbs:///a/b%2Fx/c", wantErr: errAnyKID},
		{kid: "kbs:///a/b c/d", wantErr: errAnyKID},
		{kid: "kbs:a/b/c", wantErr: errAnyKID},
		{kid: "https:///a/b/c", wantErr: errAnyKID},
		{kid: "/default/image_key/nginx", wantErr: errAnyKID},
		{kid: "kbs+pkcs11:///a/b/c", wantErr: spec.ErrUnsupported},
		{kid: "", wantErr: errAnyKID},
	}
	for _, tt := range tests {
		p, err := ParseKID(tt.kid)
		repo, typ, tag := p.Repo, p.Type, p.Tag
		switch {
		case tt.wantErr == nil && err != nil:
			t.Errorf("ParseKID(%q): %v", tt.kid, err)
		case tt.wantErr == nil && (repo != tt.repo || typ != tt.typ || tag != tt.tag):
			t.Errorf("ParseKID(%q) = %q, %q, %q; want %q, %q, %q", tt.kid, repo, typ, tag, tt.repo, tt.typ, tt.tag)
		case tt.wantErr != nil && err == nil:
			t.Errorf("ParseKID(%q) = %q, %q, %q; want an error", tt.kid, repo, typ, tag)
		case tt.wantErr != nil && tt.wantErr != errAnyKID && !errors.Is(err, tt.wantErr):
			t.Errorf("ParseKID(%q) err = %v, want %v", tt.kid, err, tt.wantErr)
		}
	}
}

var errAnyKID = errors.New("any error")
