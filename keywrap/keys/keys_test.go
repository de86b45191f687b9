package keys_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io/fs"
	"os/exec"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/internal/testutil"
	"github.com/coffer-dev/coffer/keywrap/keys"
	"github.com/coffer-dev/coffer/keywrap/keys/keystest"
	"github.com/coffer-dev/coffer/spec"
)

type equaler interface{ Equal(crypto.PrivateKey) bool }

func legacyPEM(t *testing.T, typ string, der, pass []byte) []byte {
	t.Helper()
	b, err := x509.EncryptPEMBlock(rand.Reader, typ, der, pass, x509.PEMCipherAES256) //nolint:staticcheck // testing the legacy format
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(b)
}

func jwkJSON(t *testing.T, key any, kid, alg string) []byte {
	t.Helper()
	b, err := jose.JSONWebKey{Key: key, KeyID: kid, Algorithm: alg}.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseMaterialPrivateFormats(t *testing.T) {
	rk := keystest.RSA(t, 0)
	ek := keystest.EC(t, elliptic.P384())
	sec1, err := x509.MarshalECPrivateKey(ek)
	if err != nil {
		t.Fatal(err)
	}
	pkcs1 := x509.MarshalPKCS1PrivateKey(rk)
	_, certDER := keystest.Cert(t, rk, "rsa")
	pass := []byte("s3cret pass")

	tests := []struct {
		name      string
		data      []byte
		password  []byte
		want      crypto.PrivateKey
		wantCerts int
		wantKID   string
	}{
		{"rsa pkcs8 pem", keystest.PEM("PRIVATE KEY", keystest.PKCS8(t, rk)), nil, rk, 0, ""},
		{"rsa pkcs8 der", keystest.PKCS8(t, rk), nil, rk, 0, ""},
		{"rsa pkcs1 pem", keystest.PEM("RSA PRIVATE KEY", pkcs1), nil, rk, 0, ""},
		{"rsa pkcs1 der", pkcs1, nil, rk, 0, ""},
		{"ec pkcs8 pem", keystest.PEM("PRIVATE KEY", keystest.PKCS8(t, ek)), nil, ek, 0, ""},
		{"ec pkcs8 der", keystest.PKCS8(t, ek), nil, ek, 0, ""},
		{"ec sec1 pem", keystest.PEM("EC PRIVATE KEY", sec1), nil, ek, 0, ""},
		{"ec sec1 pem with params", append(keystest.PEM("EC PARAMETERS", []byte{0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22}), keystest.PEM("EC PRIVATE KEY", sec1)...), nil, ek, 0, ""},
		{"ec sec1 der", sec1, nil, ek, 0, ""},
		{"rsa legacy encrypted pem", legacyPEM(t, "RSA PRIVATE KEY", pkcs1, pass), pass, rk, 0, ""},
		{"ec legacy encrypted pem", legacyPEM(t, "EC PRIVATE KEY", sec1, pass), pass, ek, 0, ""},
		{"rsa jwk", jwkJSON(t, rk, "rsa-1", "RSA-OAEP-256"), nil, rk, 0, "rsa-1"},
		{"ec jwk", jwkJSON(t, ek, "ec-1", ""), nil, ek, 0, "ec-1"},
		{"key and cert pem", append(keystest.PEM("PRIVATE KEY", keystest.PKCS8(t, rk)), keystest.PEM("CERTIFICATE", certDER)...), nil, rk, 1, ""},
		{"cert only pem", keystest.PEM("CERTIFICATE", certDER), nil, nil, 1, ""},
		{"cert only der", certDER, nil, nil, 1, ""},
		{"password given for plain key", keystest.PEM("PRIVATE KEY", keystest.PKCS8(t, rk)), pass, rk, 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := keys.ParseMaterial("key.file", tc.data, tc.password)
			if err != nil {
				t.Fatalf("ParseMaterial: %v", err)
			}
			if tc.want == nil {
				if m.Private != nil {
					t.Fatalf("got private key %T, want none", m.Private)
				}
			} else if e, ok := m.Private.(equaler); !ok || !e.Equal(tc.want) {
				t.Fatalf("got key %T, want %T equal to the original", m.Private, tc.want)
			}
			if len(m.Certs) != tc.wantCerts {
				t.Errorf("got %d certs, want %d", len(m.Certs), tc.wantCerts)
			}
			if m.KeyID != tc.wantKID {
				t.Errorf("got kid %q, want %q", m.KeyID, tc.wantKID)
			}
			if m.Name != "key.file" {
				t.Errorf("got name %q", m.Name)
			}
		})
	}
}

// TestOpenSSLEncrypted checks encrypted PKCS#8 (PBES2) and legacy PEM written
// by openssl itself.
func TestOpenSSLEncrypted(t *testing.T) {
	openssl := testutil.RequireTool(t, "openssl")
	dir := t.TempDir()
	rk := keystest.RSA(t, 0)
	ek := keystest.EC(t, elliptic.P256())
	rsaFile := keystest.Write(t, dir, "rsa.pem", keystest.PEM("PRIVATE KEY", keystest.PKCS8(t, rk)))
	ecFile := keystest.Write(t, dir, "ec.pem", keystest.PEM("PRIVATE KEY", keystest.PKCS8(t, ek)))
	const pw = "openssl pw"

	tests := []struct {
		name string
		in   string
		want crypto.PrivateKey
		args []string
	}{
		{"pkcs8 v2 aes256", rsaFile, rk, []string{"pkcs8", "-topk8", "-v2", "aes256"}},
		{"pkcs8 v2 aes128 sha512 prf", rsaFile, rk, []string{"pkcs8", "-topk8", "-v2", "aes128", "-v2prf", "hmacWithSHA512"}},
		{"pkcs8 v2 aes192 sha1 prf", ecFile, ek, []string{"pkcs8", "-topk8", "-v2", "aes192", "-v2prf", "hmacWithSHA1"}},
		{"pkcs8 v2 des3", ecFile, ek, []string{"pkcs8", "-topk8", "-v2", "des3"}},
		{"pkcs8 v2 aes256 der", ecFile, ek, []string{"pkcs8", "-topk8", "-v2", "aes256", "-outform", "DER"}},
		{"pkey aes256", ecFile, ek, []string{"pkey", "-aes256"}},
		{"rsa traditional aes256", rsaFile, rk, []string{"rsa", "-traditional", "-aes256"}},
		{"ec traditional aes128", ecFile, ek, []string{"ec", "-aes128"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append([]string{}, tc.args...), "-in", tc.in, "-passout", "pass:"+pw)
			out, err := exec.Command(openssl, args...).Output()
			if err != nil {
				t.Fatalf("openssl %v: %v", args, err)
			}
			if tc.name != "pkcs8 v2 aes256 der" && !bytes.Contains(out, []byte("ENCRYPTED")) {
				t.Fatalf("openssl output is not encrypted:\n%s", out)
			}
			m, err := keys.ParseMaterial("enc.pem", out, []byte(pw))
			if err != nil {
				t.Fatalf("ParseMaterial: %v", err)
			}
			if !m.Private.(equaler).Equal(tc.want) {
				t.Fatal("decrypted key differs from the original")
			}
			_, err = keys.ParseMaterial("enc.pem", out, []byte("not it"))
			if !errors.Is(err, keys.ErrWrongPassword) {
				t.Fatalf("wrong password: got %v, want ErrWrongPassword", err)
			}
			if got, want := err.Error(), "wrong password for key file enc.pem"; got != want {
				t.Errorf("got %q, want %q", got, want)
			}
			_, err = keys.ParseMaterial("enc.pem", out, nil)
			if !errors.Is(err, keys.ErrPasswordRequired) {
				t.Fatalf("no password: got %v, want ErrPasswordRequired", err)
			}
		})
	}
}

func TestPasswordErrors(t *testing.T) {
	rk := keystest.RSA(t, 0)
	pass := []byte("right")
	legacy := legacyPEM(t, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rk), pass)
	e := keystest.PGP(t, "alice")
	pgpSecret := keystest.PGPSecret(t, e, true, pass)

	for _, tc := range []struct {
		name string
		data []byte
	}{{"legacy pem", legacy}, {"openpgp", pgpSecret}} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := keys.ParseMaterial("k.key", tc.data, []byte("wrong"))
			var pe *keys.PasswordError
			if !errors.As(err, &pe) || pe.Missing || !errors.Is(err, keys.ErrWrongPassword) {
				t.Fatalf("wrong password: got %v", err)
			}
			if got, want := err.Error(), "wrong password for key file k.key"; got != want {
				t.Errorf("got %q, want %q", got, want)
			}
			_, err = keys.ParseMaterial("k.key", tc.data, nil)
			if !errors.Is(err, keys.ErrPasswordRequired) || errors.Is(err, keys.ErrWrongPassword) {
				t.Fatalf("missing password: got %v", err)
			}
			if !strings.Contains(err.Error(), "k.key:pass=") {
				t.Errorf("missing-password message %q does not say how to give one", err)
			}
			m, err := keys.ParseMaterial("k.key", tc.data, pass)
			if err != nil {
				t.Fatalf("right password: %v", err)
			}
			if m.Private == nil && len(m.OpenPGP) == 0 {
				t.Fatal("right password: no key")
			}
		})
	}
}

func TestParseMaterialOpenPGP(t *testing.T) {
	e := keystest.PGP(t, "bob")
	for _, armored := range []bool{true, false} {
		m, err := keys.ParseMaterial("sec.asc", keystest.PGPSecret(t, e, armored, nil), nil)
		if err != nil {
			t.Fatalf("armored=%v: %v", armored, err)
		}
		if got := len(m.OpenPGP); got != 1 {
			t.Fatalf("armored=%v: got %d entities, want 1", armored, got)
		}
		if got, want := m.OpenPGP[0].PrimaryKey.KeyId, e.PrimaryKey.KeyId; got != want {
			t.Errorf("got key id %X, want %X", got, want)
		}
		// A public key is not a --key.
		_, err = keys.ParseMaterial("pub.asc", keystest.PGPPublic(t, e, armored), nil)
		if !errors.Is(err, spec.ErrUnsupported) || !strings.Contains(err.Error(), "OpenPGP public key") {
			t.Errorf("armored=%v public key as --key: got %v", armored, err)
		}
		el, err := keys.ParseOpenPGP("pub", keystest.PGPPublic(t, e, armored))
		if err != nil || len(el) != 1 || el[0].PrimaryKey.KeyId != e.PrimaryKey.KeyId {
			t.Errorf("ParseOpenPGP armored=%v: %v", armored, err)
		}
	}
}

func TestParseMaterialRejects(t *testing.T) {
	rk := keystest.RSA(t, 0)
	pubPEM := keystest.PEM("PUBLIC KEY", keystest.PKIX(t, rk.Public()))
	secretBody := keystest.PKCS8(t, rk)
	corrupt := keystest.PEM("PRIVATE KEY", secretBody[:len(secretBody)/2])
	tests := []struct {
		name, data, want string
	}{
		{"garbage", "hello world", "key.pem: not a recognized private key (expected PKCS#8, PKCS#1, SEC1, JWK or OpenPGP)"},
		{"empty", "  \n", "key.pem: empty key file"},
		{"public pem", string(pubPEM), "key.pem: is a public key; a private key is needed here"},
		{"public der", string(keystest.PKIX(t, rk.Public())), "key.pem: is a public key; a private key is needed here"},
		{"public jwk", string(jwkJSON(t, rk.Public(), "", "")), "key.pem: is a public JWK; a private key is needed here"},
		{"bad jwk", `{"kty":"RSA"`, "key.pem: not a recognized private key (expected PKCS#8, PKCS#1, SEC1, JWK or OpenPGP): malformed JWK"},
		{"corrupt pkcs8", string(corrupt), "key.pem: malformed private key"},
		{"two keys", string(append(keystest.PEM("PRIVATE KEY", secretBody), keystest.PEM("PRIVATE KEY", secretBody)...)), "key.pem: holds more than one private key; give one key per file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := keys.ParseMaterial("key.pem", []byte(tc.data), nil)
			if err == nil {
				t.Fatal("got no error")
			}
			if got := err.Error(); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			if !errors.Is(err, spec.ErrUnsupported) && tc.name != "corrupt pkcs8" {
				t.Errorf("error %v does not wrap spec.ErrUnsupported", err)
			}
			// Never echo key material.
			if b64 := base64.StdEncoding.EncodeToString(secretBody); strings.Contains(err.Error(), b64[40:80]) {
				t.Error("error contains key bytes")
			}
		})
	}
}

func TestParsePublicKey(t *testing.T) {
	rk := keystest.RSA(t, 0)
	ek := keystest.EC(t, elliptic.P256())
	cert, certDER := keystest.Cert(t, ek, "ec")
	tests := []struct {
		name     string
		data     []byte
		want     crypto.PublicKey
		alg, kid string
		cert     bool
	}{
		{"pkix pem rsa", keystest.PEM("PUBLIC KEY", keystest.PKIX(t, rk.Public())), rk.Public(), "", "", false},
		{"pkix der ec", keystest.PKIX(t, ek.Public()), ek.Public(), "", "", false},
		{"pkcs1 public pem", keystest.PEM("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&rk.PublicKey)), rk.Public(), "", "", false},
		{"cert pem", keystest.PEM("CERTIFICATE", certDER), cert.PublicKey, "", "", true},
		{"cert der", certDER, cert.PublicKey, "", "", true},
		{"jwk with alg and kid", jwkJSON(t, rk.Public(), "k1", "RSA-OAEP-256"), rk.Public(), "RSA-OAEP-256", "k1", false},
		{"private jwk gives its public half", jwkJSON(t, ek, "k2", "ECDH-ES+A128KW"), ek.Public(), "ECDH-ES+A128KW", "k2", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := keys.ParsePublicKey("pub", tc.data)
			if err != nil {
				t.Fatal(err)
			}
			if !p.Key.(interface{ Equal(crypto.PublicKey) bool }).Equal(tc.want) {
				t.Errorf("got key %T, not equal to the original", p.Key)
			}
			if p.Algorithm != tc.alg || p.KeyID != tc.kid {
				t.Errorf("got alg %q kid %q, want %q %q", p.Algorithm, p.KeyID, tc.alg, tc.kid)
			}
			if (p.Cert != nil) != tc.cert {
				t.Errorf("got cert %v, want %v", p.Cert != nil, tc.cert)
			}
		})
	}
	_, err := keys.ParsePublicKey("priv.pem", keystest.PEM("PRIVATE KEY", keystest.PKCS8(t, rk)))
	if !errors.Is(err, spec.ErrUnsupported) || !strings.Contains(err.Error(), "is a private key") {
		t.Errorf("private key as public: got %v", err)
	}
	_, err = keys.ParsePublicKey("x", []byte("nope"))
	if !errors.Is(err, spec.ErrUnsupported) {
		t.Errorf("garbage: got %v", err)
	}
}

func TestParseCertificates(t *testing.T) {
	rk := keystest.RSA(t, 0)
	ek := keystest.EC(t, elliptic.P256())
	c1, d1 := keystest.Cert(t, rk, "one")
	c2, d2 := keystest.Cert(t, ek, "two")
	certs, err := keys.ParseCertificates("c.pem", append(keystest.PEM("CERTIFICATE", d1), keystest.PEM("CERTIFICATE", d2)...))
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 2 || !certs[0].Equal(c1) || !certs[1].Equal(c2) {
		t.Fatalf("got %d certs, want the two originals", len(certs))
	}
	certs, err = keys.ParseCertificates("c.der", d1)
	if err != nil || len(certs) != 1 || !certs[0].Equal(c1) {
		t.Fatalf("der: got %d certs, %v", len(certs), err)
	}
	_, err = keys.ParseCertificates("pub.pem", keystest.PEM("PUBLIC KEY", keystest.PKIX(t, rk.Public())))
	if got, want := err.Error(), "pub.pem: not an x509 certificate (PEM or DER)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestLoadFiles(t *testing.T) {
	dir := t.TempDir()
	ek := keystest.EC(t, elliptic.P256())
	kp := keystest.Write(t, dir, "k.pem", keystest.PEM("PRIVATE KEY", keystest.PKCS8(t, ek)))
	m, err := keys.LoadMaterial(kp, nil)
	if err != nil || m.Name != kp || !m.Private.(*ecdsa.PrivateKey).Equal(ek) {
		t.Fatalf("LoadMaterial: %v", err)
	}
	pp := keystest.Write(t, dir, "p.pem", keystest.PEM("PUBLIC KEY", keystest.PKIX(t, ek.Public())))
	if p, err := keys.LoadPublicKey(pp); err != nil || !p.Key.(*ecdsa.PublicKey).Equal(ek.Public()) {
		t.Fatalf("LoadPublicKey: %v", err)
	}
	for _, load := range []func(string) error{
		func(p string) error { _, err := keys.LoadMaterial(p, nil); return err },
		func(p string) error { _, err := keys.LoadPublicKey(p); return err },
		func(p string) error { _, err := keys.LoadCertificates(p); return err },
		func(p string) error { _, err := keys.LoadOpenPGP(p); return err },
	} {
		if err := load(dir + "/missing.pem"); !errors.Is(err, spec.ErrNotFound) || !errors.Is(err, fs.ErrNotExist) || !strings.HasSuffix(err.Error(), "missing.pem does not exist") {
			t.Errorf("missing file: got %v, want ErrNotFound naming the file", err)
		}
	}
}

func FuzzParseMaterial(f *testing.F) {
	rk := keystest.RSA(f, 0)
	f.Add(keystest.PEM("PRIVATE KEY", keystest.PKCS8(f, rk)), []byte(""))
	f.Add(keystest.PKCS8(f, rk), []byte("pw"))
	f.Add(x509.MarshalPKCS1PrivateKey(rk), []byte(""))
	f.Add([]byte(`{"kty":"EC","crv":"P-256","x":"AA","y":"AA","d":"AA"}`), []byte(""))
	f.Add([]byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n"), []byte("pw"))
	f.Add([]byte("-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n-----END PGP PRIVATE KEY BLOCK-----\n"), []byte(""))
	f.Add([]byte{0x95, 0x01, 0x00}, []byte(""))
	f.Fuzz(func(t *testing.T, data, password []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		m, err := keys.ParseMaterial("fuzz", data, password)
		if err == nil && m.Private == nil && len(m.Certs) == 0 && len(m.OpenPGP) == 0 {
			t.Fatal("no error and nothing parsed")
		}
		_, _ = keys.ParsePublicKey("fuzz", data)
		_, _ = keys.ParseCertificates("fuzz", data)
		_, _ = keys.ParseOpenPGP("fuzz", data)
	})
}
