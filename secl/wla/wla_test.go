package wla_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/kbs/adminclient"
	"github.com/coffer-dev/coffer/kbs/kbstest"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/kbs/server"
	"github.com/coffer-dev/coffer/secl/flavor"
	"github.com/coffer-dev/coffer/secl/wla"
	"github.com/coffer-dev/coffer/secl/wls"
	"github.com/coffer-dev/coffer/secl/wlsclient"
	"github.com/coffer-dev/coffer/secl/wpm"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/tpm"
	"github.com/coffer-dev/coffer/tpm/tpmtest"
)

func signer(t *testing.T) (crypto.Signer, *x509.Certificate) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "flavor signer"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return key, c
}

type world struct {
	trust   wla.Trust
	key     crypto.Signer // the flavor signer's key
	broker  *kbstest.Broker
	wlsURL  string
	admin   *wlsclient.Client
	plain   []byte
	enc     string
	imageID string
	dir     string
}

func openTPM(t *testing.T) *tpm.TPM {
	t.Helper()
	sw := tpmtest.StartSwtpm(t)
	tp, err := tpm.Open(t.Context(), sw.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	return tp
}

// setup: owner encrypts an image (wpm), the provider's WLS stores its
// flavor and image, the broker trusts host's AK and pins its PCR11.
func setup(t *testing.T, host *tpm.TPM, seclFormat ...bool) *world {
	t.Helper()
	return setupWith(t, host, nil, nil, len(seclFormat) > 0)
}

// setupWith is setup with extra broker and WLS options.
func setupWith(t *testing.T, host *tpm.TPM, bopts []server.Option, wopts []wls.Option, seclFormat bool) *world {
	t.Helper()
	ctx := t.Context()
	b := kbstest.New(t, bopts...)
	w := &world{broker: b, dir: t.TempDir()}
	key, cert := signer(t)
	adm, err := adminclient.New(b.URL, b.AdminKey)
	if err != nil {
		t.Fatal(err)
	}
	w.plain = make([]byte, 3<<20+7)
	rand.Read(w.plain)
	in := filepath.Join(w.dir, "disk.qcow2")
	os.WriteFile(in, w.plain, 0o600)
	w.enc = filepath.Join(w.dir, "disk.enc")
	flavorFile := filepath.Join(w.dir, "flavor.json")
	f, err := wpm.CreateImageFlavor(ctx, wpm.ImageFlavorRequest{Label: "vm", Input: in, Output: w.enc, FlavorOut: flavorFile,
		BrokerURL: b.URL, Admin: adm, SigningKey: key, SecLFormat: seclFormat})
	if err != nil {
		t.Fatal(err)
	}
	store, err := wls.OpenStore(filepath.Join(w.dir, "wls"))
	if err != nil {
		t.Fatal(err)
	}
	_, adminKey, _ := ed25519.GenerateKey(rand.Reader)
	srv, err := wls.New(store, append([]wls.Option{wls.WithFlavorSigners(cert), wls.WithAdminKeys(adminKey.Public().(ed25519.PublicKey)),
		wls.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))}, wopts...)...)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	w.wlsURL = hs.URL
	w.admin = wlsclient.NewClient(hs.URL, adminKey, nil)
	doc, _ := os.ReadFile(flavorFile)
	fid, err := w.admin.AddFlavor(ctx, doc)
	if err != nil || fid != f.Meta.ID {
		t.Fatalf("AddFlavor = %q, %v; want %s", fid, err, f.Meta.ID)
	}
	w.key = key
	w.trust = wla.Trust{Signers: []*x509.Certificate{cert}, BrokerKeys: []*ecdsa.PublicKey{b.Server.Signer().PublicKey()}, Label: "vm"}
	w.imageID = "6f1e2d3c-4b5a-4968-8776-655443322110"
	if err := w.admin.AddImage(ctx, w.imageID, fid); err != nil {
		t.Fatal(err)
	}
	ak, err := host.AKPublic(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pcrs, err := host.ReadPCRs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b.SetReferenceValue(t, "tpm_ak_public", base64.StdEncoding.EncodeToString(ak))
	b.SetReferenceValue(t, "tpm_pcr11", hex.EncodeToString(pcrs[11]))
	return w
}

func (w *world) decrypt(t *testing.T, host *tpm.TPM, out string) error {
	_, err := wla.DecryptImage(t.Context(), wla.DecryptRequest{WLS: w.wlsURL, ImageID: w.imageID, TPM: host, Input: w.enc, Output: out,
		Trust: w.trust, LoopbackHTTP: true})
	return err
}

func absent(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s exists after a refused decrypt", path)
	}
}

// The SecL flow with two swtpm hosts: A (AK registered, PCR11 as pinned)
// decrypts byte-identically; B (AK not registered) is refused and gets
// nothing; A after a PCR11 extend is refused.
func TestFlow(t *testing.T) {
	t.Parallel()
	a, b := openTPM(t), openTPM(t)
	w := setup(t, a)
	out := filepath.Join(w.dir, "out.img")
	if err := w.decrypt(t, a, out); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, w.plain) {
		t.Fatal("host A's decrypted image differs from the original")
	}
	outB := filepath.Join(w.dir, "outB.img")
	err := w.decrypt(t, b, outB)
	t.Log("host B:", err)
	if !errors.Is(err, spec.ErrPolicyDenied) {
		t.Errorf("host B (AK not registered): err = %v, want ErrPolicyDenied", err)
	}
	absent(t, outB)
	if err := a.ExtendPCR(t.Context(), 11, make([]byte, 32)); err != nil {
		t.Fatal(err)
	}
	outA2 := filepath.Join(w.dir, "outA2.img")
	err = w.decrypt(t, a, outA2)
	t.Log("PCR:", err)
	if !errors.Is(err, spec.ErrPolicyDenied) {
		t.Errorf("host A after a PCR11 extend: err = %v, want ErrPolicyDenied", err)
	}
	absent(t, outA2)
	if err := w.decrypt(t, a, filepath.Join(w.dir, "x")); err == nil {
		t.Error("unknown image accepted")
	}
	w.imageID = "00000000-0000-4000-8000-000000000000"
	if err := w.decrypt(t, a, filepath.Join(w.dir, "x")); !errors.Is(err, spec.ErrNotFound) {
		t.Errorf("unknown image: err = %v, want ErrNotFound", err)
	}
}

// Attacks on the key transfer: a binding key certified by another TPM's
// AK, a replayed request, a certification replayed into a fresh
// attestation, and a key wrapped for A presented to B's TPM.
func TestKeyTransferAttacks(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a, b := openTPM(t), openTPM(t)
	w := setup(t, a)
	c := wlsclient.NewClient(w.wlsURL, nil, nil)

	// B's binding key (certified by B's AK over A's report data) in A's attestation.
	ch, err := c.Challenge(ctx, w.imageID)
	if err != nil {
		t.Fatal(err)
	}
	krA, err := wla.Prove(ctx, a, ch)
	if err != nil {
		t.Fatal(err)
	}
	krB, err := wla.Prove(ctx, b, ch)
	if err != nil {
		t.Fatal(err)
	}
	mixed := *krA
	mixed.BindingKey = krB.BindingKey
	_, err = c.FlavorKey(ctx, w.imageID, mixed)
	t.Log("mixed:", err)
	if !errors.Is(err, spec.ErrPolicyDenied) {
		t.Errorf("binding key certified by another AK: err = %v, want ErrPolicyDenied", err)
	}
	// The nonce was spent: replaying A's genuine request fails too.
	_, err = c.FlavorKey(ctx, w.imageID, *krA)
	t.Log("replay:", err)
	if !errors.Is(err, spec.ErrPolicyDenied) {
		t.Errorf("replayed request: err = %v, want ErrPolicyDenied", err)
	}

	// A genuine exchange, then its certification replayed into a fresh attestation.
	ch2, _ := c.Challenge(ctx, w.imageID)
	kr2, err := wla.Prove(ctx, a, ch2)
	if err != nil {
		t.Fatal(err)
	}
	ch3, _ := c.Challenge(ctx, w.imageID)
	kr3, err := wla.Prove(ctx, a, ch3)
	if err != nil {
		t.Fatal(err)
	}
	fk, err := c.FlavorKey(ctx, w.imageID, *kr2)
	if err != nil {
		t.Fatal(err)
	}
	kr3.BindingKey = kr2.BindingKey
	_, err = c.FlavorKey(ctx, w.imageID, *kr3)
	t.Log("replayed certify:", err)
	if !errors.Is(err, spec.ErrPolicyDenied) {
		t.Errorf("certification replayed into another attestation: err = %v, want ErrPolicyDenied", err)
	}

	// The key wrapped for A: A's TPM opens it, B's does not.
	if k, err := a.Unbind(ctx, fk.Key); err != nil || len(k) != 32 {
		t.Fatalf("A unbinding its key: %d bytes, %v", len(k), err)
	}
	if _, err := b.Unbind(ctx, fk.Key); !errors.Is(err, spec.ErrNoKey) {
		t.Errorf("B unbinding A's key: err = %v, want ErrNoKey", err)
	}
}

// The WLS refuses unsigned, foreign-signed and modified flavors.
func TestWLSRefusesFlavors(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a := openTPM(t)
	w := setup(t, a)
	foreignKey, _ := signer(t)
	f, _ := flavor.New(flavor.PartImage, "x", flavor.KeyURL(w.broker.URL, "2b7a3e1c-6a2e-4b8e-9c1f-0d4f5e6a7b8c"), "")
	foreign, _ := flavor.Sign(f, foreignKey)
	good, _ := os.ReadFile(filepath.Join(w.dir, "flavor.json"))
	modified := bytes.Replace(good, []byte(`"vm"`), []byte(`"vn"`), 1)
	unsigned := bytes.Replace(good, []byte(`"signature":"`), []byte(`"signature":"","x":"`), 1)
	for _, tc := range []struct {
		name string
		doc  []byte
	}{{"foreign signer", foreign}, {"modified", modified}, {"unsigned", unsigned}} {
		if _, err := w.admin.AddFlavor(ctx, tc.doc); !errors.Is(err, spec.ErrUnsupported) {
			t.Errorf("%s: AddFlavor err = %v, want a refusal", tc.name, err)
		}
	}
	noAdmin := wlsclient.NewClient(w.wlsURL, nil, nil)
	if _, err := noAdmin.AddFlavor(ctx, good); err == nil {
		t.Error("AddFlavor without admin key accepted")
	}
}

// An image in SecL's ISecL-VMC format goes the same way.
func TestFlowSecLFormat(t *testing.T) {
	t.Parallel()
	a := openTPM(t)
	w := setup(t, a, true)
	if head, _ := os.ReadFile(w.enc); !bytes.HasPrefix(head, []byte("ISecL-VMC")) {
		t.Fatal("wpm did not write SecL's format")
	}
	out := filepath.Join(w.dir, "out.img")
	if err := w.decrypt(t, a, out); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, w.plain) {
		t.Fatal("decrypted SecL-format image differs")
	}
}

// The host keyprovider opens SecL annotations through WLS → broker → TPM,
// and with a cache serves an image's other layers without attesting again.
func TestKeyProviderCache(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a := openTPM(t)
	w := setup(t, a)
	doc, _ := os.ReadFile(filepath.Join(w.dir, "flavor.json"))
	_, f, err := flavor.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	_, id, _ := flavor.ParseKeyURL(f.Encryption.KeyURL)
	p, _ := protocol.ParseResourcePath(flavor.KeyResource(id))
	key, err := w.broker.Store.Get(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	layer1, _ := flavor.SealAnnotation(key, f.Encryption.KeyURL, []byte(`{"layer":1}`))
	layer2, _ := flavor.SealAnnotation(key, f.Encryption.KeyURL, []byte(`{"layer":2}`))
	kp := &wla.KeyProvider{WLS: wlsclient.NewClient(w.wlsURL, nil, nil), TPM: a, BrokerKeys: w.trust.BrokerKeys, CacheTTL: time.Minute}
	if got, err := kp.UnwrapKey(ctx, nil, layer1); err != nil || string(got) != `{"layer":1}` {
		t.Fatalf("layer 1: %q, %v", got, err)
	}
	dead := wlsclient.NewClient("http://127.0.0.1:1", nil, nil)
	kp.WLS = dead // the second layer must come from the cache
	if got, err := kp.UnwrapKey(ctx, nil, layer2); err != nil || string(got) != `{"layer":2}` {
		t.Fatalf("layer 2 from the cache: %q, %v", got, err)
	}
	nocache := &wla.KeyProvider{WLS: dead, TPM: a, BrokerKeys: w.trust.BrokerKeys}
	if _, err := nocache.UnwrapKey(ctx, nil, layer2); err == nil {
		t.Error("a provider without cache opened a layer with the WLS down")
	}
}
