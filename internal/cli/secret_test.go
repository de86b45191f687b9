package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/agent/ttrpc/gen/cdh"
)

// A secret sealed by `coffer secret seal` unseals through `coffer secret
// unseal` and through a running agent's ttrpc UnsealSecret; a changed byte
// is refused by both.
func TestSecretSealUnseal(t *testing.T) {
	b, _ := brokerWithKEK(t, "default/image_key/app")
	b.SetResource(t, "default/app/password", []byte("hunter2"))
	dir := t.TempDir()
	priv, pub := filepath.Join(dir, "seal.jwk"), filepath.Join(dir, "seal.pub.jwk")
	if _, _, err := runCofferSplit(t, nil, "secret", "keygen", priv, pub); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(priv); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %v, %v", fi.Mode(), err)
	}
	if _, _, err := runCofferSplit(t, nil, "secret", "keygen", priv, pub); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Errorf("keygen over an existing key: %v", err)
	}
	pubJWK, _ := os.ReadFile(pub)
	b.SetResource(t, "default/sealed-secret/key1", pubJWK)
	out, _, err := runCofferSplit(t, nil, "secret", "seal", "--signing-key", priv, "--kid", "kbs:///default/sealed-secret/key1", "kbs:///default/app/password")
	if err != nil {
		t.Fatal(err)
	}
	sealed := strings.TrimSpace(out)
	if !strings.HasPrefix(sealed, "sealed.") || strings.Count(sealed, ".") != 3 {
		t.Fatalf("sealed = %q", sealed)
	}
	pt, _, err := runCofferSplit(t, nil, "secret", "unseal", "--kbs", b.URL, "--tee", "sample", sealed)
	if err != nil || pt != "hunter2" {
		t.Errorf("unseal = %q, %v", pt, err)
	}
	tampered := []byte(sealed)
	i := len(tampered) / 2
	tampered[i] ^= 1
	if pt, _, err := runCofferSplit(t, []byte(tampered), "secret", "unseal", "--kbs", b.URL, "--tee", "sample", "-"); err == nil {
		t.Errorf("tampered secret unsealed to %q", pt)
	}

	sock := filepath.Join(shortDir(t), "cdh.sock")
	startAgent(t, "--kbs", b.URL, "--tee", "sample", "--cdh-socket", "unix://"+sock)
	sc := cdh.NewSealedSecretServiceClient(dialTTRPC(t, sock))
	res, err := sc.UnsealSecret(context.Background(), &cdh.UnsealSecretInput{Secret: []byte(sealed)})
	if err != nil || string(res.GetPlaintext()) != "hunter2" {
		t.Errorf("UnsealSecret = %q, %v", res.GetPlaintext(), err)
	}
	if res, err := sc.UnsealSecret(context.Background(), &cdh.UnsealSecretInput{Secret: tampered}); err == nil {
		t.Errorf("UnsealSecret of a tampered secret = %q", res.GetPlaintext())
	}

	// Envelope: the secret travels inside the sealed secret, the broker
	// holds only the key that wraps its key.
	kek := filepath.Join(dir, "kek.bin")
	kekBytes := []byte("0123456789abcdef0123456789abcdef")
	os.WriteFile(kek, kekBytes, 0o600)
	b.SetResource(t, "default/kek/app", kekBytes)
	secretFile := filepath.Join(dir, "pw.txt")
	os.WriteFile(secretFile, []byte("envelope-pw"), 0o600)
	out, _, err = runCofferSplit(t, nil, "secret", "seal", "--signing-key", priv, "--kid", "kbs:///default/sealed-secret/key1",
		"--type", "envelope", "--key-id", "kbs:///default/kek/app", "--kek", kek, secretFile)
	if err != nil {
		t.Fatal(err)
	}
	env := strings.TrimSpace(out)
	if strings.Contains(env, "envelope-pw") {
		t.Fatal("plaintext in the sealed secret")
	}
	if pt, _, err := runCofferSplit(t, nil, "secret", "unseal", "--kbs", b.URL, "--tee", "sample", env); err != nil || pt != "envelope-pw" {
		t.Errorf("unseal envelope = %q, %v", pt, err)
	}
	if res, err := sc.UnsealSecret(context.Background(), &cdh.UnsealSecretInput{Secret: []byte(env)}); err != nil || string(res.GetPlaintext()) != "envelope-pw" {
		t.Errorf("UnsealSecret envelope = %q, %v", res.GetPlaintext(), err)
	}
	if _, _, err := runCofferSplit(t, nil, "secret", "seal", "--signing-key", priv, "--kid", "kbs:///default/sealed-secret/key1",
		"--type", "envelope", secretFile); err == nil || !strings.Contains(err.Error(), "--key-id") {
		t.Errorf("envelope without --key-id: %v", err)
	}
	// The broker's key replaced: the envelope no longer opens.
	b.SetResource(t, "default/kek/app", []byte("fedcba9876543210fedcba9876543210"))
	if pt, _, err := runCofferSplit(t, nil, "secret", "unseal", "--kbs", b.URL, "--tee", "sample", env); err == nil || !strings.Contains(err.Error(), "does not unwrap") {
		t.Errorf("unseal with another broker key = %q, %v", pt, err)
	}
}

func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "cf-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}
