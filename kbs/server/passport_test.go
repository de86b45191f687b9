package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/kbs/policy"
	"github.com/coffer-dev/coffer/kbs/server"
)

// issuerCA makes a CA and a leaf certifying a fresh P-256 token key; it
// writes ca.pem, key.pem and chain.pem (leaf, CA) into dir.
func issuerCA(t *testing.T, dir, name string) (caFile, keyFile, chainFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name + " token signer"},
		KeyUsage: x509.KeyUsageDigitalSignature, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	leafDER, _ := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	p8, _ := x509.MarshalPKCS8PrivateKey(key)
	pemOf := func(typ string, b []byte) string { return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b})) }
	return writeFile(t, dir, name+"-ca.pem", pemOf("CERTIFICATE", caDER)),
		writeFile(t, dir, name+"-key.pem", pemOf("PRIVATE KEY", p8)),
		writeFile(t, dir, name+"-chain.pem", pemOf("CERTIFICATE", leafDER)+pemOf("CERTIFICATE", caDER))
}

func serveConfig(t *testing.T, c server.Config) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	cf := files(t, c)
	go func() {
		done <- server.Serve(ctx, c, cf, slog.New(slog.DiscardHandler), func(a net.Addr) { addrc <- a.String() })
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case a := <-addrc:
		return "http://" + a
	case err := <-done:
		t.Fatalf("serve: %v", err)
	}
	return ""
}

// Passport mode (issue 7): broker A attests and signs tokens carrying its
// certificate chain; broker B, which trusts A's CA, releases to them without
// attesting anybody; a token from an issuer B does not trust is refused.
func TestPassportTokens(t *testing.T) {
	dir := t.TempDir()
	caA, keyA, chainA := issuerCA(t, dir, "a")
	_, keyX, chainX := issuerCA(t, dir, "x")
	allow := writeFile(t, dir, "allow.rego", policy.ResourceAllowAll)

	base := server.DefaultConfig()
	base.Listen, base.Store, base.AllowSampleTee, base.ResourcePolicyFile = "127.0.0.1:0", "memory", true, allow
	a := base
	a.TokenKey, a.TokenCert = keyA, chainA
	x := base
	x.TokenKey, x.TokenCert = keyX, chainX
	b := base
	b.Store, b.Repository = "fs", filepath.Join(dir, "repo-b")
	b.TrustedTokenCerts = []string{caA}
	if err := os.MkdirAll(filepath.Join(dir, "repo-b", "default", "image_key"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "repo-b", "default", "image_key"), "nginx", string(secret))

	urlA, urlX, urlB := serveConfig(t, a), serveConfig(t, x), serveConfig(t, b)
	ca := newRCAR(t, urlA) // attests on A only
	tokA := ca.handshake()
	cb := newRCARWithKey(t, urlB, ca.priv, ca.pub) // the same guest, asking B
	got, _, r := cb.get(keyPath, tokA)
	if r.code != http.StatusOK || string(got) != string(secret) {
		t.Fatalf("B with A's token: %d %s", r.code, r.body)
	}
	cx := newRCAR(t, urlX)
	tokX := cx.handshake()
	_, _, r = newRCARWithKey(t, urlB, cx.priv, cx.pub).get(keyPath, tokX)
	if r.code != http.StatusUnauthorized || !strings.Contains(string(r.body), "x5c chain not trusted") {
		t.Fatalf("B with an untrusted issuer's token: %d %s", r.code, r.body)
	}
	// A's tokens carry the chain in the header's jwk, as trustee's do.
	hdr, _ := base64.RawURLEncoding.DecodeString(strings.Split(tokA, ".")[0])
	if !strings.Contains(string(hdr), `"x5c":[`) {
		t.Fatalf("token header without x5c: %s", hdr)
	}
}
