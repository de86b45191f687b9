package recipients_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/keywrap/keys"
	"github.com/coffer-dev/coffer/keywrap/keys/keystest"
	"github.com/coffer-dev/coffer/keywrap/pkcs7"
	"github.com/coffer-dev/coffer/keywrap/recipients"
	"github.com/coffer-dev/coffer/spec"
)

var privopts = []byte(`{"symkey":"MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MTI=","digest":"sha256:00","cipheroptions":{"nonce":"MDEyMzQ1Njc4OWFiY2RlZg=="}}`)

// fixture writes one key set of every kind to a temp dir.
type fixture struct {
	dir                             string
	rsaPriv, rsaPub, rsaCert        string
	ecPriv, ecJWKPub                string
	pgpPub, pgpSec                  string
	kek                             string
	rsaEncPriv                      string // legacy encrypted PEM, password "pw:with:colons"
	otherRSAPriv                    string
	rsaPrivKey, otherRSAKey, ecKeyK crypto.PrivateKey
}

const rsaPassword = "pw:with:colons"

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{dir: dir}
	rk := keystest.RSA(t, 0)
	ok := keystest.RSA(t, 1)
	ek := keystest.EC(t, elliptic.P256())
	f.rsaPrivKey, f.otherRSAKey, f.ecKeyK = rk, ok, ek
	_, certDER := keystest.Cert(t, rk, "rsa recipient")
	f.rsaPriv = keystest.Write(t, dir, "rsa.pem", keystest.PEM("PRIVATE KEY", keystest.PKCS8(t, rk)))
	f.rsaPub = keystest.Write(t, dir, "rsa.pub.pem", keystest.PEM("PUBLIC KEY", keystest.PKIX(t, rk.Public())))
	f.rsaCert = keystest.Write(t, dir, "rsa.crt", keystest.PEM("CERTIFICATE", certDER))
	f.otherRSAPriv = keystest.Write(t, dir, "other.der", keystest.PKCS8(t, ok))
	blk, err := x509.EncryptPEMBlock(rand.Reader, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rk), []byte(rsaPassword), x509.PEMCipherAES256) //nolint:staticcheck // legacy format under test
	if err != nil {
		t.Fatal(err)
	}
	f.rsaEncPriv = keystest.Write(t, dir, "rsa.enc.pem", pem.EncodeToMemory(blk))
	ecJWK, _ := jose.JSONWebKey{Key: ek, KeyID: "ec-kid"}.MarshalJSON()
	f.ecPriv = keystest.Write(t, dir, "ec.jwk", ecJWK)
	ecPubJWK, _ := jose.JSONWebKey{Key: ek.Public(), KeyID: "ec-kid", Algorithm: "ECDH-ES+A128KW"}.MarshalJSON()
	f.ecJWKPub = keystest.Write(t, dir, "ec.pub.jwk", ecPubJWK)
	e := keystest.PGP(t, "alice")
	f.pgpPub = keystest.Write(t, dir, "alice.asc", keystest.PGPPublic(t, e, true))
	f.pgpSec = keystest.Write(t, dir, "alice.sec.gpg", keystest.PGPSecret(t, e, false, []byte("pgp pass")))
	kek := make([]byte, 32)
	_, _ = rand.Read(kek)
	f.kek = keystest.Write(t, dir, "kek.bin", kek)
	return f
}

func schemes[T interface{ Scheme() string }](xs []T) string {
	var s []string
	for _, x := range xs {
		s = append(s, x.Scheme())
	}
	return strings.Join(s, ",")
}

func TestParseRecipientsOrderAndRoundTrip(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	aaParams := "keypath=" + f.kek + "::keyid=kbs:///default/image_key/nginx::algorithm=A256GCM"
	ws, err := recipients.ParseRecipients(ctx, []string{
		"provider:attestation-agent:" + aaParams,
		"pgp:" + f.pgpPub,
		"jwe:" + f.rsaPub,
		"pkcs7:" + f.rsaCert,
		"jwe:" + f.ecJWKPub,
		"jwe:" + f.rsaPub, // duplicate: wrapped for once
	}, recipients.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := schemes(ws), "jwe,pkcs7,pgp,provider.attestation-agent"; got != want {
		t.Fatalf("got schemes %s, want %s", got, want)
	}
	entries := map[string][]byte{}
	for _, w := range ws {
		e, err := w.Wrap(ctx, privopts)
		if err != nil {
			t.Fatalf("%s: %v", w.Scheme(), err)
		}
		entries[w.Scheme()] = e
	}
	describe := map[string]string{}
	for s, e := range entries {
		lines, err := recipients.Describe(s, e)
		if err != nil {
			t.Fatalf("Describe %s: %v", s, err)
		}
		describe[s] = strings.Join(lines, "; ")
	}
	if got, want := describe["jwe"], "alg=RSA-OAEP enc=A256GCM; alg=ECDH-ES+A128KW enc=A256GCM epk=P-256 kid=ec-kid"; got != want {
		t.Errorf("jwe: got %q, want %q", got, want)
	}
	if got := describe["pkcs7"]; !strings.Contains(got, `issuer="CN=rsa recipient,O=coffer tests" serial=0x`) {
		t.Errorf("pkcs7: got %q", got)
	}
	if got := describe["pgp"]; !strings.HasPrefix(got, "keyid ") || len(got) != len("keyid ")+16 {
		t.Errorf("pgp: got %q", got)
	}
	if got, want := describe["provider.attestation-agent"], "provider attestation-agent kid kbs:///default/image_key/nginx"; got != want {
		t.Errorf("aa: got %q, want %q", got, want)
	}

	// Each key opens the entries of its schemes.
	tests := []struct {
		name    string
		keys    []string
		schemes string
		opens   []string
	}{
		{"rsa key and cert", []string{f.rsaPriv, f.rsaCert}, "jwe,pkcs7", []string{"jwe", "pkcs7"}},
		{"encrypted rsa key, password with colons", []string{f.rsaEncPriv + ":pass=" + rsaPassword, f.rsaCert}, "jwe,pkcs7", []string{"jwe", "pkcs7"}},
		{"ec jwk", []string{f.ecPriv}, "jwe", []string{"jwe"}},
		{"pgp secret", []string{f.pgpSec + ":pass=pgp pass"}, "pgp", []string{"pgp"}},
		{"native aa with local kek", []string{"provider:attestation-agent:keypath=" + f.kek}, "provider.attestation-agent", []string{"provider.attestation-agent"}},
		{"all, any order", []string{"provider:attestation-agent:keypath=" + f.kek, f.pgpSec + ":pass=pgp pass", f.rsaCert, f.ecPriv, f.rsaPriv}, "jwe,pkcs7,pgp,provider.attestation-agent", []string{"jwe", "pkcs7", "pgp", "provider.attestation-agent"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			us, err := recipients.ParseKeys(ctx, tc.keys, recipients.Env{})
			if err != nil {
				t.Fatal(err)
			}
			if got := schemes(us); got != tc.schemes {
				t.Fatalf("got unwrappers %s, want %s", got, tc.schemes)
			}
			for _, s := range tc.opens {
				u := find(us, s)
				got, err := u.Unwrap(ctx, entries[s])
				if err != nil || !bytes.Equal(got, privopts) {
					t.Errorf("%s: got %q, %v", s, got, err)
				}
			}
		})
	}

	// Another RSA key: ErrNoKey for jwe (pkcs7 has no cert for it).
	us, err := recipients.ParseKeys(ctx, []string{f.otherRSAPriv}, recipients.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := find(us, "jwe").Unwrap(ctx, entries["jwe"]); !errors.Is(err, spec.ErrNoKey) {
		t.Errorf("other key, jwe: got %v, want ErrNoKey", err)
	}
	// The right RSA key without its certificate: pkcs7 says what is missing.
	us, err = recipients.ParseKeys(ctx, []string{f.rsaPriv}, recipients.Env{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = find(us, "pkcs7").Unwrap(ctx, entries["pkcs7"])
	if !errors.Is(err, pkcs7.ErrNeedCertificate) || !strings.Contains(err.Error(), "pass --key cert.pem too") {
		t.Errorf("missing cert: got %v", err)
	}
	// A local KEK bound to another kid does not open the entry.
	us, err = recipients.ParseKeys(ctx, []string{"provider:attestation-agent:keypath=" + f.kek + "::keyid=kbs:///other/key/x"}, recipients.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := us[0].Unwrap(ctx, entries["provider.attestation-agent"]); !errors.Is(err, spec.ErrNoKey) {
		t.Errorf("kek for another kid: got %v, want ErrNoKey", err)
	}
}

func find(us []keywrap.Unwrapper, scheme string) keywrap.Unwrapper {
	for _, u := range us {
		if u.Scheme() == scheme {
			return u
		}
	}
	return nil
}

func TestPasswordForms(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	withNL := keystest.Write(t, f.dir, "pw.txt", []byte(rsaPassword+"\n"))
	exact := keystest.Write(t, f.dir, "pw-exact.txt", []byte(rsaPassword))
	wrong := keystest.Write(t, f.dir, "pw-wrong.txt", []byte("nope\n"))

	pipeFD := func(t *testing.T, content string) int {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.WriteString(content); err != nil {
			t.Fatal(err)
		}
		w.Close()
		// ParseKeys closes the descriptor it reads: give it a duplicate.
		fd, err := syscall.Dup(int(r.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		r.Close()
		return fd
	}

	tests := []struct {
		name    string
		spec    func(t *testing.T) string
		stdin   string
		wantErr error
		wantMsg string
	}{
		{"pass=", func(*testing.T) string { return f.rsaEncPriv + ":pass=" + rsaPassword }, "", nil, ""},
		{"file= with newline", func(*testing.T) string { return f.rsaEncPriv + ":file=" + withNL }, "", nil, ""},
		{"file= exact", func(*testing.T) string { return f.rsaEncPriv + ":file=" + exact }, "", nil, ""},
		{"fd=N", func(t *testing.T) string { return fmt.Sprintf("%s:fd=%d", f.rsaEncPriv, pipeFD(t, rsaPassword+"\n")) }, "", nil, ""},
		{"fd=0 from Env.Stdin", func(*testing.T) string { return f.rsaEncPriv + ":fd=0" }, rsaPassword, nil, ""},
		{"bare FILE:PASSWORD (ocicrypt form)", func(*testing.T) string { return f.pgpSec + ":pgp pass" }, "", nil, ""},
		{"wrong pass=", func(*testing.T) string { return f.rsaEncPriv + ":pass=wrong" }, "", keys.ErrWrongPassword, "wrong password for key file " + f.rsaEncPriv},
		{"wrong file=", func(*testing.T) string { return f.rsaEncPriv + ":file=" + wrong }, "", keys.ErrWrongPassword, "wrong password for key file " + f.rsaEncPriv},
		{"missing password", func(*testing.T) string { return f.rsaEncPriv }, "", keys.ErrPasswordRequired, "key file " + f.rsaEncPriv + " is encrypted"},
		{"missing pgp password", func(*testing.T) string { return f.pgpSec }, "", keys.ErrPasswordRequired, "key file " + f.pgpSec + " is encrypted"},
		{"password file missing", func(*testing.T) string { return f.rsaEncPriv + ":file=" + f.dir + "/nope" }, "", os.ErrNotExist, "password file for key " + f.rsaEncPriv},
		{"key file missing, bare password not echoed", func(*testing.T) string { return f.dir + "/nope.pem:TopSecret" }, "", spec.ErrNotFound, "key file " + f.dir + "/nope.pem"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := recipients.Env{}
			if tc.stdin != "" {
				env.Stdin = strings.NewReader(tc.stdin)
			}
			us, err := recipients.ParseKeys(ctx, []string{tc.spec(t)}, env)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				if len(us) == 0 {
					t.Fatal("no unwrappers")
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("got %v, want %v", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("got %q, want it to contain %q", err, tc.wantMsg)
			}
			for _, secret := range []string{rsaPassword, "TopSecret", "wrong"} {
				if strings.Contains(err.Error(), secret) && !strings.Contains(tc.wantMsg, secret) {
					t.Errorf("error %q contains the password", err)
				}
			}
		})
	}
}

func TestErrors(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	garbage := keystest.Write(t, f.dir, "key.pem", []byte("not a key"))
	ed := keystest.Write(t, f.dir, "ed.pem", edPEM(t))
	cfg := keystest.Write(t, f.dir, "kp.json", []byte(`{"key-providers":{"other":{"cmd":{"path":"/bin/false"}}}}`))

	t.Run("unknown recipient scheme", func(t *testing.T) {
		_, err := recipients.ParseRecipients(ctx, []string{"tpm2:" + f.rsaPub}, recipients.Env{})
		if !errors.Is(err, spec.ErrUnsupported) {
			t.Fatalf("got %v, want ErrUnsupported", err)
		}
		for _, s := range []string{`"tpm2"`, "jwe:FILE", "pkcs7:FILE", "pgp:FILE", "pkcs11:FILE", "provider:NAME[:PARAMS]"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error %q does not name %s", err, s)
			}
		}
	})
	recipientErrs := []struct {
		name, spec string
		want       error
		msg        string
	}{
		{"no scheme", f.rsaPub, spec.ErrUnsupported, "has no scheme"},
		{"jwe with a private key", "jwe:" + f.rsaPriv, spec.ErrUnsupported, "is a private key"},
		{"pkcs7 with a public key", "pkcs7:" + f.rsaPub, spec.ErrUnsupported, "not an x509 certificate"},
		{"pgp with a keyring name", "pgp:alice@example.com", spec.ErrNotFound, "not a keyring name"},
		{"pkcs7 EC cert", "pkcs7:" + ecCert(t, f), spec.ErrUnsupported, "need RSA"},
		{"pkcs11 EC key", "pkcs11:" + f.ecJWKPub, spec.ErrUnsupported, "the pkcs11 scheme needs RSA"},
		{"pkcs11 garbage", "pkcs11:" + garbage, spec.ErrUnsupported, "not a pkcs11 key file, and"},
		{"pkcs11 key file without object", "pkcs11:" + keystest.Write(t, f.dir, "noobj.yaml", []byte("pkcs11:\n  uri: pkcs11:token=t?module-name=softhsm2\n")), nil, "names no object"},
		{"provider without config", "provider:other:x", spec.ErrNotFound, "set OCICRYPT_KEYPROVIDER_CONFIG"},
		{"aa without keyid", "provider:attestation-agent:keypath=" + f.kek, nil, "keyid"},
		{"aa bad kek file", "provider:attestation-agent:keypath=" + f.rsaPub + "::keyid=kbs:///a/b/c", nil, "32 bytes"},
	}
	for _, tc := range recipientErrs {
		t.Run(tc.name, func(t *testing.T) {
			_, err := recipients.ParseRecipients(ctx, []string{tc.spec}, recipients.Env{})
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v containing %q", err, tc.want, tc.msg)
			}
		})
	}
	keyErrs := []struct {
		name string
		spec []string
		env  recipients.Env
		want error
		msg  string
	}{
		{"unrecognized key", []string{garbage}, recipients.Env{}, spec.ErrUnsupported, garbage + ": not a recognized private key (expected PKCS#8, PKCS#1, SEC1, JWK or OpenPGP)"},
		{"public key as key", []string{f.rsaPub}, recipients.Env{}, spec.ErrUnsupported, "is a public key"},
		{"ed25519 key", []string{ed}, recipients.Env{}, spec.ErrUnsupported, "open no coffer scheme"},
		{"certificate alone", []string{f.rsaCert}, recipients.Env{}, spec.ErrNoKey, "certificates alone cannot decrypt"},
		{"provider not configured", []string{"provider:other"}, recipients.Env{KeyProviderConfig: cfg}, nil, ""},
		{"provider missing from config", []string{"provider:nope"}, recipients.Env{KeyProviderConfig: cfg}, spec.ErrNotFound, "is not in " + cfg},
		{"aa without config or keypath", []string{"provider:attestation-agent"}, recipients.Env{}, spec.ErrNotFound, "keypath=KEKFILE"},
		{"bad fd", []string{f.rsaEncPriv + ":fd=x"}, recipients.Env{}, nil, "FILE:fd=N"},
	}
	for _, tc := range keyErrs {
		t.Run(tc.name, func(t *testing.T) {
			us, err := recipients.ParseKeys(ctx, tc.spec, tc.env)
			if tc.msg == "" {
				// Configured provider: delegated, not an error here.
				if err != nil || schemes(us) != "provider.other" {
					t.Fatalf("got %s, %v; want the configured provider", schemes(us), err)
				}
				return
			}
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v containing %q", err, tc.want, tc.msg)
			}
		})
	}
	if us, err := recipients.ParseKeys(ctx, nil, recipients.Env{}); err != nil || len(us) != 0 {
		t.Errorf("no keys: got %d unwrappers, %v", len(us), err)
	}
	if _, err := recipients.Describe("tpm2", []byte("x")); !errors.Is(err, spec.ErrUnsupported) {
		t.Errorf("Describe unknown scheme: got %v", err)
	}
	if _, err := recipients.Describe("pkcs11", []byte("x")); !errors.Is(err, spec.ErrIntegrity) {
		t.Errorf("Describe junk pkcs11: got %v", err)
	}
	if lines, err := recipients.Describe("provider.other", []byte("opaque")); err != nil || fmt.Sprint(lines) != "[provider other]" {
		t.Errorf("Describe provider.other: got %q, %v", lines, err)
	}
	if _, err := recipients.Describe("jwe", []byte("junk")); !errors.Is(err, spec.ErrUnsupported) {
		t.Errorf("Describe junk jwe: got %v", err)
	}
}

// A configured provider named attestation-agent is used instead of the
// native one: here its command fails, which the native path would not.
func TestConfiguredProviderWins(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	cfg := keystest.Write(t, f.dir, "kp.json", []byte(`{"key-providers":{"attestation-agent":{"cmd":{"path":"/bin/false"}}}}`))
	spec := "provider:attestation-agent:keypath=" + f.kek + "::keyid=kbs:///default/image_key/nginx"
	native, err := recipients.ParseRecipients(ctx, []string{spec}, recipients.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := native[0].Wrap(ctx, privopts); err != nil {
		t.Fatalf("native: %v", err)
	}
	configured, err := recipients.ParseRecipients(ctx, []string{spec}, recipients.Env{KeyProviderConfig: cfg})
	if err != nil {
		t.Fatal(err)
	}
	if configured[0].Scheme() != "provider.attestation-agent" {
		t.Fatalf("scheme %q", configured[0].Scheme())
	}
	if _, err := configured[0].Wrap(ctx, privopts); err == nil {
		t.Fatal("configured provider (/bin/false) wrapped: the native path was used")
	}
	if _, err := recipients.ParseRecipients(ctx, []string{spec}, recipients.Env{KeyProviderConfig: f.dir + "/missing.json"}); err == nil {
		t.Fatal("missing config file: no error")
	}
}

func ecCert(t *testing.T, f *fixture) string {
	_, der := keystest.Cert(t, keystest.EC(t, elliptic.P256()), "ec")
	return keystest.Write(t, f.dir, "ec.crt", keystest.PEM("CERTIFICATE", der))
}

func edPEM(t *testing.T) []byte {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return keystest.PEM("PRIVATE KEY", keystest.PKCS8(t, priv))
}

// Layers are processed in parallel: wrappers and unwrappers must be safe for
// concurrent use (run with -race).
func TestConcurrentUse(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	ws, err := recipients.ParseRecipients(ctx, []string{
		"jwe:" + f.rsaPub, "jwe:" + f.ecJWKPub, "pkcs7:" + f.rsaCert, "pgp:" + f.pgpPub,
		"provider:attestation-agent:keypath=" + f.kek + "::keyid=kbs:///default/image_key/nginx",
	}, recipients.Env{})
	if err != nil {
		t.Fatal(err)
	}
	us, err := recipients.ParseKeys(ctx, []string{f.rsaPriv, f.rsaCert, f.pgpSec + ":pass=pgp pass", "provider:attestation-agent:keypath=" + f.kek}, recipients.Env{})
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 8*len(ws))
	for i := 0; i < 8; i++ {
		go func() {
			for _, w := range ws {
				e, err := w.Wrap(ctx, privopts)
				if err == nil {
					var got []byte
					got, err = find(us, w.Scheme()).Unwrap(ctx, e)
					if err == nil && !bytes.Equal(got, privopts) {
						err = fmt.Errorf("%s: got %q", w.Scheme(), got)
					}
				}
				errs <- err
			}
		}()
	}
	for i := 0; i < 8*len(ws); i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// BenchmarkWrapUnwrap measures one wrap and one unwrap per scheme (the
// per-layer cost of key wrapping).
func BenchmarkWrapUnwrap(b *testing.B) {
	dir := b.TempDir()
	rk := keystest.RSA(b, 0)
	ek := keystest.EC(b, elliptic.P256())
	_, certDER := keystest.Cert(b, rk, "bench")
	e := keystest.PGP(b, "bench")
	kek := make([]byte, 32)
	files := map[string]string{
		"rsa.pub": keystest.Write(b, dir, "rsa.pub", keystest.PEM("PUBLIC KEY", keystest.PKIX(b, rk.Public()))),
		"rsa":     keystest.Write(b, dir, "rsa", keystest.PEM("PRIVATE KEY", keystest.PKCS8(b, rk))),
		"ec.pub":  keystest.Write(b, dir, "ec.pub", keystest.PEM("PUBLIC KEY", keystest.PKIX(b, ek.Public()))),
		"ec":      keystest.Write(b, dir, "ec", keystest.PEM("PRIVATE KEY", keystest.PKCS8(b, ek))),
		"crt":     keystest.Write(b, dir, "crt", keystest.PEM("CERTIFICATE", certDER)),
		"pgp.pub": keystest.Write(b, dir, "pgp.pub", keystest.PGPPublic(b, e, false)),
		"pgp":     keystest.Write(b, dir, "pgp", keystest.PGPSecret(b, e, false, nil)),
		"kek":     keystest.Write(b, dir, "kek", kek),
	}
	cases := []struct{ name, recipient, key, scheme string }{
		{"jwe-rsa", "jwe:" + files["rsa.pub"], files["rsa"], "jwe"},
		{"jwe-ec", "jwe:" + files["ec.pub"], files["ec"], "jwe"},
		{"pkcs7", "pkcs7:" + files["crt"], files["rsa"], "pkcs7"},
		{"pgp", "pgp:" + files["pgp.pub"], files["pgp"], "pgp"},
		{"aa-native", "provider:attestation-agent:keypath=" + files["kek"] + "::keyid=kbs:///a/b/c", "provider:attestation-agent:keypath=" + files["kek"], "provider.attestation-agent"},
	}
	ctx := context.Background()
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			ws, err := recipients.ParseRecipients(ctx, []string{c.recipient}, recipients.Env{})
			if err != nil {
				b.Fatal(err)
			}
			us, err := recipients.ParseKeys(ctx, []string{c.key, files["crt"]}, recipients.Env{})
			if err != nil {
				b.Fatal(err)
			}
			u := find(us, c.scheme)
			for b.Loop() {
				entry, err := ws[0].Wrap(ctx, privopts)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := u.Unwrap(ctx, entry); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
