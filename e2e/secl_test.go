package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/internal/cli"
	"github.com/coffer-dev/coffer/internal/testutil"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/tpm/tpmtest"
)

// brokerTokenKey writes a broker token key (--token-key) and its public
// part, the key hosts pin (--broker-key); it returns both paths.
func brokerTokenKey(t *testing.T, dir string) (key, pub string) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	pder, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	return writePEM(t, filepath.Join(dir, "token.pem"), "PRIVATE KEY", der), writePEM(t, filepath.Join(dir, "token.pub"), "PUBLIC KEY", pder)
}

func startWLS(t *testing.T, signerCert, adminPub, db string) string {
	t.Helper()
	addr := testutil.FreeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		root := cli.NewRoot()
		root.SetArgs([]string{"wls", "serve", "--listen", addr, "--db", db, "--flavor-signer-cert", signerCert, "--admin-public-key", adminPub})
		done <- root.ExecuteContext(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("wls serve: %v", err)
		}
	})
	testutil.WaitListening(t, addr)
	return "http://" + addr
}

// flavorSigner writes an ECDSA P-384 flavor signing key and its
// self-signed certificate into dir and returns their paths.
func flavorSigner(t *testing.T, dir string) (keyFile, certFile string) {
	t.Helper()
	signKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(signKey)
	keyFile = writePEM(t, filepath.Join(dir, "flavor-signer.pem"), "PRIVATE KEY", der)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "flavor signer"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	cder, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, signKey.Public(), signKey)
	return keyFile, writePEM(t, filepath.Join(dir, "signer.crt"), "CERTIFICATE", cder)
}

// The SecL flow with the coffer CLI: the owner encrypts a 64 MiB disk
// image (wpm), the provider stores its flavor and image (wls), host A
// (swtpm, AK registered, PCR11 pinned) decrypts it byte-identically
// (wla); host B (another swtpm, AK not registered) and host A after a
// tpm2_pcrextend are refused and write nothing.
func TestSecLVMImageFlow(t *testing.T) {
	hostA, hostB := tpmtest.StartSwtpm(t), tpmtest.StartSwtpm(t)
	boot := pcrExtend(t, hostA, 11, "kernel and initrd of host A")
	pcrExtend(t, hostB, 11, "kernel and initrd of host A")
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }

	mustCoffer(t, "kbs", "keygen-admin", "--out", p("kbs-admin.key"))
	mustCoffer(t, "kbs", "keygen-admin", "--out", p("wls-admin.key"))
	tokenKey, brokerPub := brokerTokenKey(t, dir)
	kbs := startBroker(t, p("kbs-admin.key.pub"), "--token-key", tokenKey)
	adm := []string{"--url", kbs, "--admin-key", p("kbs-admin.key")}
	mustCoffer(t, append([]string{"kbs", "set-resource-policy", "--affirming"}, adm...)...)

	flavorSigner(t, dir)

	plain := make([]byte, 64<<20)
	rand.Read(plain)
	if err := os.WriteFile(p("disk.qcow2"), plain, 0o600); err != nil {
		t.Fatal(err)
	}
	fid := strings.TrimSpace(mustCoffer(t, "wpm", "create-image-flavor", "-l", "cirros", "-i", p("disk.qcow2"), "-e", p("disk.enc"),
		"-o", p("flavor.json"), "--kbs", kbs, "--admin-key", p("kbs-admin.key"), "--signing-key", p("flavor-signer.pem")))

	wls := startWLS(t, p("signer.crt"), p("wls-admin.key.pub"), p("wls-db"))
	wadm := []string{"--url", wls, "--admin-key", p("wls-admin.key")}
	if got := strings.TrimSpace(mustCoffer(t, append([]string{"wls", "add-flavor", p("flavor.json")}, wadm...)...)); got != fid {
		t.Fatalf("add-flavor printed %q, want %q", got, fid)
	}
	const image = "0d9c8b7a-6f5e-4d3c-8b2a-190817263544"
	mustCoffer(t, append([]string{"wls", "add-image", "--image-id", image, "--flavor-id", fid}, wadm...)...)

	ak := strings.TrimSpace(mustCoffer(t, "tpm", "ak-public", "--tpm", hostA.Addr))
	mustCoffer(t, append([]string{"kbs", "set-reference-value", "tpm_ak_public", ak}, adm...)...)
	mustCoffer(t, append([]string{"kbs", "set-reference-value", "tpm_pcr11", extended(boot)}, adm...)...)

	hostDir := t.TempDir() // what the host writes: the image, and nothing else
	decrypt := func(addr, out string) error {
		_, stderr, err := coffer(t, "wla", "decrypt-image", "--wls", wls, "--image-id", image, "--tpm", addr,
			"--flavor-signer-cert", p("signer.crt"), "--broker-key", brokerPub, "--expect-label", "cirros", "--insecure-loopback-http",
			"-i", p("disk.enc"), "-o", filepath.Join(hostDir, out))
		if err != nil {
			t.Logf("decrypt-image on %s: %v %s", addr, err, stderr)
		}
		return err
	}
	if err := decrypt(hostA.Addr, "disk.img"); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(hostDir, "disk.img")); !bytes.Equal(got, plain) {
		t.Fatal("host A's image differs from the original")
	}
	if err := decrypt(hostB.Addr, "b.img"); !errors.Is(err, spec.ErrPolicyDenied) {
		t.Errorf("host B (AK not registered): err = %v, want ErrPolicyDenied", err)
	}
	pcrExtend(t, hostA, 11, "an unexpected module")
	if err := decrypt(hostA.Addr, "a2.img"); !errors.Is(err, spec.ErrPolicyDenied) {
		t.Errorf("host A after tpm2_pcrextend: err = %v, want ErrPolicyDenied", err)
	}
	entries, _ := os.ReadDir(hostDir)
	if len(entries) != 1 || entries[0].Name() != "disk.img" {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("host directory holds %v, want only disk.img (no key, no partial output)", names)
	}
}
