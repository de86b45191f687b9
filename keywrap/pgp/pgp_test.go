package pgp_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/containers/ocicrypt/config"
	ocipgp "github.com/containers/ocicrypt/keywrap/pgp"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/internal/testutil"
	"github.com/coffer-dev/coffer/keywrap/keys"
	"github.com/coffer-dev/coffer/keywrap/keys/keystest"
	"github.com/coffer-dev/coffer/keywrap/pgp"
	"github.com/coffer-dev/coffer/spec"
)

var privopts = []byte(`{"symkey":"MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MTI=","digest":"sha256:00","cipheroptions":{"nonce":"MDEyMzQ1Njc4OWFiY2RlZg=="}}`)

func wrap(t *testing.T, to ...*openpgp.Entity) []byte {
	t.Helper()
	w, err := pgp.NewWrapper(to)
	if err != nil {
		t.Fatal(err)
	}
	if w.Scheme() != "pgp" {
		t.Fatalf("scheme %q", w.Scheme())
	}
	out, err := w.Wrap(context.Background(), privopts)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func unwrap(t *testing.T, entry []byte, secret ...*openpgp.Entity) ([]byte, error) {
	t.Helper()
	u, err := pgp.NewUnwrapper(secret)
	if err != nil {
		t.Fatal(err)
	}
	return u.Unwrap(context.Background(), entry)
}

// publicOnly re-reads the public part of e, as a recipient file would give it.
func publicOnly(t *testing.T, e *openpgp.Entity) *openpgp.Entity {
	t.Helper()
	el, err := keys.ParseOpenPGP("pub", keystest.PGPPublic(t, e, false))
	if err != nil {
		t.Fatal(err)
	}
	return el[0]
}

// checkStructure verifies the message shape ocicrypt writes: public-key
// encrypted session keys, then one integrity-protected encrypted packet
// (AES-256, which every test key prefers), whose content is one literal packet: no compression, no
// signature.
func checkStructure(t *testing.T, entry []byte, secret *openpgp.Entity, wantRecipients int) {
	t.Helper()
	r := packet.NewReader(bytes.NewReader(entry))
	var eks []*packet.EncryptedKey
	var sealed *packet.SymmetricallyEncrypted
	for sealed == nil {
		p, err := r.Next()
		if err != nil {
			t.Fatalf("reading packets: %v", err)
		}
		switch p := p.(type) {
		case *packet.EncryptedKey:
			eks = append(eks, p)
		case *packet.SymmetricallyEncrypted:
			sealed = p
		default:
			t.Fatalf("unexpected packet %T", p)
		}
	}
	if len(eks) != wantRecipients {
		t.Fatalf("got %d session key packets, want %d", len(eks), wantRecipients)
	}
	if !sealed.IntegrityProtected {
		t.Fatal("encrypted packet is not integrity protected")
	}
	// Decrypt the session key to see the cipher, then the inner packets.
	var ek *packet.EncryptedKey
	for _, k := range eks {
		if sk, ok := secret.EncryptionKey(secret.PrimaryKey.CreationTime); ok && k.KeyId == sk.PublicKey.KeyId {
			if err := k.Decrypt(sk.PrivateKey, nil); err != nil {
				t.Fatal(err)
			}
			ek = k
		}
	}
	if ek == nil {
		t.Fatal("no session key packet for the secret key")
	}
	if ek.CipherFunc != packet.CipherAES256 {
		t.Errorf("got cipher %v, want AES-256", ek.CipherFunc)
	}
	rc, err := sealed.Decrypt(ek.CipherFunc, ek.Key)
	if err != nil {
		t.Fatal(err)
	}
	inner := packet.NewReader(rc)
	p, err := inner.Next()
	if err != nil {
		t.Fatal(err)
	}
	lit, ok := p.(*packet.LiteralData)
	if !ok {
		t.Fatalf("inner packet %T, want literal data (no compression, no signature)", p)
	}
	if lit.IsBinary {
		t.Error("literal data is binary ('b'); ocicrypt writes it with no file hints ('t')")
	}
	body, err := io.ReadAll(lit.Body)
	if err != nil || !bytes.Equal(body, privopts) {
		t.Fatalf("literal body %q, %v", body, err)
	}
	if p, err := inner.Next(); err != io.EOF {
		t.Fatalf("got %T, %v after the literal packet, want EOF", p, err)
	}
}

func TestRoundTripStructureDescribe(t *testing.T) {
	alice, bob := keystest.PGP(t, "alice"), keystest.PGP(t, "bob")
	entry := wrap(t, publicOnly(t, alice), publicOnly(t, bob))
	if bytes.HasPrefix(entry, []byte("-----")) {
		t.Fatal("entry is armored, want binary")
	}
	checkStructure(t, entry, alice, 2)
	for _, e := range []*openpgp.Entity{alice, bob} {
		got, err := unwrap(t, entry, e)
		if err != nil || !bytes.Equal(got, privopts) {
			t.Errorf("%s: got %q, %v", e.PrimaryIdentity().Name, got, err)
		}
	}
	lines, err := pgp.Describe(entry)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, e := range []*openpgp.Entity{alice, bob} {
		sk, _ := e.EncryptionKey(e.PrimaryKey.CreationTime)
		want = append(want, fmt.Sprintf("keyid %016X", sk.PublicKey.KeyId))
	}
	if fmt.Sprint(lines) != fmt.Sprint(want) {
		t.Errorf("Describe: got %q, want %q", lines, want)
	}
}

func TestWrongKeyIsErrNoKey(t *testing.T) {
	alice, eve := keystest.PGP(t, "alice"), keystest.PGP(t, "eve")
	entry := wrap(t, publicOnly(t, alice))
	if _, err := unwrap(t, entry, eve); !errors.Is(err, spec.ErrNoKey) {
		t.Fatalf("got %v, want ErrNoKey", err)
	}
	if _, err := pgp.NewUnwrapper(openpgp.EntityList{publicOnly(t, alice)}); err == nil {
		t.Error("public key as unwrap key: no error")
	}
}

func TestPassphraseProtectedSecretKey(t *testing.T) {
	alice := keystest.PGP(t, "alice")
	entry := wrap(t, publicOnly(t, alice))
	for _, armored := range []bool{true, false} {
		m, err := keys.ParseMaterial("alice.sec", keystest.PGPSecret(t, alice, armored, []byte("pw")), []byte("pw"))
		if err != nil {
			t.Fatal(err)
		}
		got, err := unwrap(t, entry, m.OpenPGP...)
		if err != nil || !bytes.Equal(got, privopts) {
			t.Errorf("armored=%v: got %q, %v", armored, got, err)
		}
	}
}

func TestRejects(t *testing.T) {
	alice := keystest.PGP(t, "alice")
	entry := wrap(t, publicOnly(t, alice))
	// A plain literal message (not encrypted) must not be accepted as a
	// wrapped key.
	var lit bytes.Buffer
	w, err := packet.SerializeLiteral(nopCloser{&lit}, true, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(privopts)
	_ = w.Close()
	// Symmetrically (passphrase) encrypted.
	var sym bytes.Buffer
	sw, err := openpgp.SymmetricallyEncrypt(&sym, []byte("pw"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = sw.Write(privopts)
	_ = sw.Close()
	for name, data := range map[string][]byte{"literal": lit.Bytes(), "symmetric": sym.Bytes(), "junk": []byte("junk"), "empty": nil} {
		if _, err := unwrap(t, data, alice); !errors.Is(err, spec.ErrUnsupported) {
			t.Errorf("%s: got %v, want ErrUnsupported", name, err)
		}
		if _, err := pgp.Describe(data); !errors.Is(err, spec.ErrUnsupported) {
			t.Errorf("Describe %s: got %v, want ErrUnsupported", name, err)
		}
	}
	// Tampered ciphertext: the MDC fails.
	bad := bytes.Clone(entry)
	bad[len(bad)-5] ^= 0x01
	if _, err := unwrap(t, bad, alice); err == nil || errors.Is(err, spec.ErrNoKey) {
		t.Errorf("tampered: got %v, want an integrity error", err)
	}
}

func TestOcicryptInterop(t *testing.T) {
	alice := keystest.PGP(t, "alice")
	pub := keystest.PGPPublic(t, alice, false)
	sec := keystest.PGPSecret(t, alice, false, []byte("pw"))
	t.Run("ocicrypt wraps, coffer unwraps", func(t *testing.T) {
		cc, err := config.EncryptWithGpg([][]byte{[]byte("alice@example.com")}, pub)
		if err != nil {
			t.Fatal(err)
		}
		entry, err := ocipgp.NewKeyWrapper().WrapKeys(cc.EncryptConfig, privopts)
		if err != nil {
			t.Fatal(err)
		}
		got, err := unwrap(t, entry, alice)
		if err != nil || !bytes.Equal(got, privopts) {
			t.Fatalf("got %q, %v", got, err)
		}
	})
	t.Run("coffer wraps, ocicrypt unwraps", func(t *testing.T) {
		entry := wrap(t, publicOnly(t, alice))
		cc, err := config.DecryptWithGpgPrivKeys([][]byte{sec}, [][]byte{[]byte("pw")})
		if err != nil {
			t.Fatal(err)
		}
		got, err := ocipgp.NewKeyWrapper().UnwrapKey(cc.DecryptConfig, entry)
		if err != nil || !bytes.Equal(got, privopts) {
			t.Fatalf("got %q, %v", got, err)
		}
		ids, err := ocipgp.NewKeyWrapper().GetRecipients(base64.StdEncoding.EncodeToString(entry))
		if err != nil {
			t.Fatal(err)
		}
		lines, _ := pgp.Describe(entry)
		if len(ids) != 1 || len(lines) != 1 || !strings.EqualFold(strings.TrimLeft(strings.TrimPrefix(ids[0], "0x"), "0"), strings.TrimLeft(strings.TrimPrefix(lines[0], "keyid "), "0")) {
			t.Errorf("key ids: ocicrypt %q, coffer %q", ids, lines)
		}
	})
}

// gpg runs gpg with a private home directory.
type gpgHome struct {
	t    *testing.T
	bin  string
	home string
}

func newGPG(t *testing.T) *gpgHome {
	bin := testutil.RequireTool(t, "gpg")
	home, err := os.MkdirTemp("", "gpg")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(home, 0o700); err != nil {
		t.Fatal(err)
	}
	g := &gpgHome{t: t, bin: bin, home: home}
	t.Cleanup(func() {
		if p, err := exec.LookPath("gpgconf"); err == nil {
			_ = exec.Command(p, "--homedir", home, "--kill", "all").Run()
		}
		_ = os.RemoveAll(home)
	})
	return g
}

func (g *gpgHome) run(stdin []byte, args ...string) []byte {
	g.t.Helper()
	out, _ := g.run2(stdin, args...)
	return out
}

func (g *gpgHome) run2(stdin []byte, args ...string) ([]byte, string) {
	g.t.Helper()
	full := append([]string{"--homedir", g.home, "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", "gpgpw", "--trust-model", "always"}, args...)
	// gpg starts a gpg-agent that may keep gpg's stdout/stderr pipes open
	// after gpg exits: without WaitDelay, Output waits for the agent (a run
	// once took 695 s). The context bounds a gpg that hangs outright.
	ctx, cancel := context.WithTimeout(g.t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, g.bin, full...)
	cmd.WaitDelay = 5 * time.Second
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		g.t.Fatalf("gpg %v: %v\n%s", args, err, stderr.String())
	}
	return out, stderr.String()
}

// TestGPGInterop checks both directions against the real gpg binary with
// its default key type (Ed25519 primary, Curve25519 encryption subkey).
func TestGPGInterop(t *testing.T) {
	g := newGPG(t)
	g.run(nil, "--quick-gen-key", "Gina <gina@example.com>", "default", "default", "never")
	pubArmored := g.run(nil, "--armor", "--export", "gina@example.com")
	secArmored := g.run(nil, "--armor", "--export-secret-keys", "gina@example.com")

	pubs, err := keys.ParseOpenPGP("gina.asc", pubArmored)
	if err != nil {
		t.Fatal(err)
	}
	m, err := keys.ParseMaterial("gina.sec.asc", secArmored, []byte("gpgpw"))
	if err != nil {
		t.Fatal(err)
	}

	t.Run("coffer wraps, gpg decrypts", func(t *testing.T) {
		entry := wrap(t, pubs...)
		out, stderr := g.run2(entry, "--show-session-key", "--decrypt")
		if !bytes.Equal(out, privopts) {
			t.Fatalf("gpg decrypted %q, want %q", out, privopts)
		}
		// gpg prints "session key: '<algo>:<hex>'"; 9 is AES-256.
		if !strings.Contains(stderr, "session key: '9:") {
			t.Errorf("gpg does not report an AES-256 session key:\n%s", stderr)
		}
		// gpg's own view of the recipients matches Describe.
		lines, err := pgp.Describe(entry)
		if err != nil {
			t.Fatal(err)
		}
		listing := string(g.run(entry, "--list-packets"))
		for _, l := range lines {
			id := strings.TrimPrefix(l, "keyid ")
			if !strings.Contains(listing, "keyid "+id) {
				t.Errorf("gpg --list-packets does not show keyid %s:\n%s", id, listing)
			}
		}
		if strings.Contains(listing, ":compressed packet:") || strings.Contains(listing, ":signature packet:") {
			t.Errorf("message is compressed or signed:\n%s", listing)
		}
	})
	t.Run("gpg encrypts, coffer unwraps", func(t *testing.T) {
		for _, extra := range [][]string{nil, {"--compress-algo", "none"}} {
			args := append(append([]string{}, extra...), "--recipient", "gina@example.com", "--encrypt")
			entry := g.run(privopts, args...)
			got, err := unwrap(t, entry, m.OpenPGP...)
			if err != nil || !bytes.Equal(got, privopts) {
				t.Fatalf("%v: got %q, %v", extra, got, err)
			}
			lines, err := pgp.Describe(entry)
			if err != nil || len(lines) != 1 {
				t.Errorf("Describe: %q, %v", lines, err)
			}
		}
	})
}

func FuzzUnwrap(f *testing.F) {
	alice := keystest.PGP(f, "alice")
	w, err := pgp.NewWrapper(openpgp.EntityList{alice})
	if err != nil {
		f.Fatal(err)
	}
	entry, _ := w.Wrap(context.Background(), privopts)
	f.Add(entry)
	f.Add([]byte{0xc1, 0x00})
	f.Add([]byte{0x84, 0x01, 0x03})
	u, _ := pgp.NewUnwrapper(openpgp.EntityList{alice})
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		lines, derr := pgp.Describe(data)
		if derr == nil && len(lines) == 0 {
			t.Fatal("no error and no recipients")
		}
		if _, err := u.Unwrap(context.Background(), data); err == nil && derr != nil {
			t.Fatalf("Unwrap accepted an entry Describe rejects: %v", derr)
		}
	})
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
