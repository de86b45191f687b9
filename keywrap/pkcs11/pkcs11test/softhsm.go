// Package pkcs11test gives tests a SoftHSM2 token of their own (Debian's
// softhsm2): a token directory and softhsm2.conf under t.TempDir(), a
// token "coffer" with RSA, ECDSA or Ed25519 key pairs imported from Go-generated keys, and
// pkcs11 key files (YAML) naming them.
package pkcs11test

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/coffer-dev/coffer/internal/testutil"
	"github.com/coffer-dev/coffer/keywrap/pkcs11"
)

// Module is Debian's SoftHSM2 module.
const Module = "/usr/lib/softhsm/libsofthsm2.so"

// The token's label, user PIN and SO PIN.
const (
	Label = "coffer"
	PIN   = "1234"
	SOPIN = "0000"
)

// Token is an initialized SoftHSM2 token in a temp dir.
type Token struct {
	t    testing.TB
	Dir  string
	Conf string // its softhsm2.conf (SOFTHSM2_CONF)
}

// Config allows exactly Module.
func Config() pkcs11.Config {
	return pkcs11.Config{AllowedModulePaths: []string{Module}}
}

// New initializes a token "coffer" (PIN 1234). It skips, or fails under
// COFFER_REQUIRE_EXTERNAL=1, without softhsm2 or without cgo.
func New(t testing.TB) *Token {
	t.Helper()
	testutil.RequireExternal(t, haveCgo, "pkcs11 tokens need a cgo build (CGO_ENABLED=1)")
	testutil.RequireTool(t, "softhsm2-util")
	_, err := os.Stat(Module)
	testutil.RequireExternal(t, err == nil, Module+" is missing (apt-get install softhsm2)")
	dir := t.TempDir()
	tok := &Token{t: t, Dir: dir, Conf: filepath.Join(dir, "softhsm2.conf")}
	if err := os.Mkdir(filepath.Join(dir, "tokens"), 0o700); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", filepath.Join(dir, "tokens"))
	if err := os.WriteFile(tok.Conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	tok.util("--init-token", "--free", "--label", Label, "--pin", PIN, "--so-pin", SOPIN)
	return tok
}

func (tok *Token) util(args ...string) {
	tok.t.Helper()
	cmd := exec.Command("softhsm2-util", args...)
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+tok.Conf)
	if out, err := cmd.CombinedOutput(); err != nil {
		tok.t.Fatalf("softhsm2-util %s: %v\n%s", args[0], err, out)
	}
}

// Import puts k (an *rsa.PrivateKey, *ecdsa.PrivateKey or
// ed25519.PrivateKey: what softhsm2-util 2.6 imports from PKCS#8) on the
// token as a key pair labelled label with CKA_ID id (hex, e.g. "01").
func (tok *Token) Import(k crypto.Signer, label, id string) {
	tok.t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		tok.t.Fatal(err)
	}
	p := filepath.Join(tok.Dir, label+".p8.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		tok.t.Fatal(err)
	}
	tok.util("--import", p, "--token", Label, "--label", label, "--id", id, "--pin", PIN)
	if err := os.Remove(p); err != nil {
		tok.t.Fatal(err)
	}
}

// URI is the pkcs11: URI of object label (id as %XX, "" for none) on the
// token, with query (e.g. "pin-value=1234") after the module path.
func (tok *Token) URI(label, id, query string) string {
	u := "pkcs11:token=" + Label + ";object=" + label
	if id != "" {
		u += ";id=%" + id
	}
	u += "?module-path=" + Module
	if query != "" {
		u += "&" + query
	}
	return u
}

// KeyYAML is a pkcs11 key file for uri, with the token's SOFTHSM2_CONF
// in module.env.
func (tok *Token) KeyYAML(uri string) []byte {
	return fmt.Appendf(nil, "pkcs11:\n  uri: %s\nmodule:\n  env:\n    SOFTHSM2_CONF: %s\n", uri, tok.Conf)
}

// KeyFile writes KeyYAML(uri) to name in the token's dir and returns its path.
func (tok *Token) KeyFile(name, uri string) string {
	tok.t.Helper()
	p := filepath.Join(tok.Dir, name)
	if err := os.WriteFile(p, tok.KeyYAML(uri), 0o600); err != nil {
		tok.t.Fatal(err)
	}
	return p
}
