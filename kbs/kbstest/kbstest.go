// Package kbstest runs an in-process key broker for tests, in the spirit of
// go-containerregistry's registry.New():
//
//	b := kbstest.New(t)
//	b.SetResource(t, "default/image_key/nginx", key)
//	b.AffirmSample(t) // reference values that make the sample TEE affirming
//	// … point an RCAR client at b.URL
//
// The broker uses a memory store, a generated EAR key, the sample verifier
// and a fresh Ed25519 admin key (also written as PEM files for CLI tests).
// It is shut down by t.Cleanup.
package kbstest

import (
	"context"
	"crypto/ed25519"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/internal/kbsfiles"
	"github.com/coffer-dev/coffer/kbs/attest"
	"github.com/coffer-dev/coffer/kbs/policy"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/kbs/server"
	"github.com/coffer-dev/coffer/kbs/store"
	"github.com/coffer-dev/coffer/kbs/token"
)

// Broker is a running in-process broker.
type Broker struct {
	URL    string         // base URL, e.g. http://127.0.0.1:34567
	Server *server.Server // the handler, for direct access to policy/store/signer
	Store  store.Store    // the store the server uses (a store.Memory unless WithStore overrides it)
	HTTP   *httptest.Server

	AdminKey           ed25519.PrivateKey // signs admin tokens accepted by the broker
	AdminKeyFile       string             // PKCS#8 PEM of AdminKey (0600)
	AdminPublicKeyFile string             // PKIX PEM of its public key
}

// New starts a broker on a loopback port. opts are applied after the
// defaults (memory store, admin key, silent logger, the hardware verifiers
// plus sample: a test broker accepts the sample TEE, a real one does not
// unless told to), so they can override them.
func New(t testing.TB, opts ...server.Option) *Broker {
	t.Helper()
	privPEM, pubPEM, err := token.GenerateAdminKey()
	if err != nil {
		t.Fatal(err)
	}
	priv, err := token.ParseAdminPrivateKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile, pubFile := filepath.Join(dir, "admin.key"), filepath.Join(dir, "admin.pub")
	if err := os.WriteFile(keyFile, privPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pubFile, pubPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	mem := store.NewMemory()
	all := append([]server.Option{
		server.WithStore(mem),
		server.WithAdminKeys(priv.Public().(ed25519.PublicKey)),
		server.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
		server.WithVerifiers(attest.New(attest.Config{AllowSample: true})),
	}, opts...)
	srv, err := server.New(context.Background(), all...)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return &Broker{URL: hs.URL, Server: srv, Store: srv.Store(), HTTP: hs,
		AdminKey: priv, AdminKeyFile: keyFile, AdminPublicKeyFile: pubFile}
}

// AdminToken returns a fresh admin token for b.
func (b *Broker) AdminToken() string { return token.SignAdmin(b.AdminKey, "", time.Now(), 0) }

// SetResource stores data at path ("repo/type/tag") in the broker's store.
func (b *Broker) SetResource(t testing.TB, path string, data []byte) {
	t.Helper()
	p, err := protocol.ParseResourcePath(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Store.Set(context.Background(), p, data); err != nil {
		t.Fatal(err)
	}
}

// SetResourcePolicy installs a Rego resource policy.
func (b *Broker) SetResourcePolicy(t testing.TB, rego string) {
	t.Helper()
	if err := b.Server.Policy().SetResourcePolicy(context.Background(), rego); err != nil {
		t.Fatal(err)
	}
}

// AllowAll installs policy.ResourceAllowAll.
func (b *Broker) AllowAll(t testing.TB) { b.SetResourcePolicy(t, policy.ResourceAllowAll) }

// DenyAll installs policy.ResourceDenyAll.
func (b *Broker) DenyAll(t testing.TB) { b.SetResourcePolicy(t, policy.ResourceDenyAll) }

// SetReferenceValue sets the reference values called name.
func (b *Broker) SetReferenceValue(t testing.TB, name string, values ...string) {
	t.Helper()
	vs := make([]any, len(values))
	for i, v := range values {
		vs[i] = v
	}
	if err := b.Server.Policy().SetReferenceValue(context.Background(), name, vs); err != nil {
		t.Fatal(err)
	}
}

// AffirmSample sets the reference values (launch_digest "abcde", svn "1")
// under which the default attestation policy rates the sample TEE affirming.
func (b *Broker) AffirmSample(t testing.TB) {
	t.Helper()
	b.SetReferenceValue(t, "launch_digest", "abcde")
	b.SetReferenceValue(t, "svn", "1")
}

// ServeFiles runs the broker as `coffer kbs serve` does (server.Serve
// over the file repository under dir) on a loopback port, trusting the
// admin public key in the PEM file adminPub and the TPM EK CAs in the
// ekCA PEM files (a coffer vm guest's state/ek-ca.pem). It returns the
// base URL; t.Cleanup stops it.
func ServeFiles(t testing.TB, dir, adminPub string, ekCA ...string) string {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Repository = filepath.Join(dir, "repository")
	cfg.AdminPublicKeys = []string{adminPub}
	cfg.TPMEKCA = ekCA
	files, err := kbsfiles.Read(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- server.Serve(ctx, cfg, files, slog.New(slog.DiscardHandler), func(a net.Addr) { ready <- a })
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case a := <-ready:
		return "http://" + a.String()
	case err := <-done:
		t.Fatalf("broker: %v", err)
	}
	return ""
}
