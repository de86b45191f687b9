package wla_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/filecrypt"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/secl/flavor"
	"github.com/coffer-dev/coffer/secl/wla"
	"github.com/coffer-dev/coffer/secl/wlsclient"
	"github.com/coffer-dev/coffer/secl/wpm"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/tpm"
)

// fakeWLS answers the host's flavor-key exchange itself, as the attacker
// of review 3's W22 did: its own flavor (unsigned, or signed by the owner
// but for another key) and a key it wrapped to the host's binding public
// key; proof is whatever it claims as the broker's transfer proof.
func fakeWLS(t *testing.T, host *tpm.TPM, fl json.RawMessage, sig string, key []byte, proof string) string {
	pub, err := host.BindingPublic(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	wrapped, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, key, []byte(protocol.TPMOAEPLabel))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			n := make([]byte, 32)
			rand.Read(n)
			json.NewEncoder(w).Encode(wlsclient.Challenge{Tee: protocol.TeeTPM, Nonce: base64.StdEncoding.EncodeToString(n), Session: "s"})
			return
		}
		json.NewEncoder(w).Encode(wlsclient.FlavorKey{Flavor: fl, Signature: sig, Key: wrapped, Proof: proof})
	}))
	t.Cleanup(hs.Close)
	return hs.URL
}

// attackerImage encrypts plaintext under a key of the attacker's own and
// returns the encrypted file with its unsigned flavor naming its digest.
func attackerImage(t *testing.T, dir, keyURL string, plain []byte) (enc string, key []byte, fl *flavor.Flavor) {
	key = make([]byte, 32)
	rand.Read(key)
	in := filepath.Join(dir, "evil.img")
	os.WriteFile(in, plain, 0o600)
	enc = filepath.Join(dir, "evil.enc")
	if _, err := filecrypt.EncryptFile(t.Context(), in, enc, key); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(enc)
	d := sha512.Sum384(b)
	fl, err := flavor.New(flavor.PartImage, "vm", keyURL, base64.StdEncoding.EncodeToString(d[:]))
	if err != nil {
		t.Fatal(err)
	}
	return enc, key, fl
}

// W22: a fake WLS serving an unsigned flavor for the attacker's image and
// a key the attacker wrapped to the host's binding public key. The host
// refuses (no verifiable flavor, no broker proof) and writes nothing; a
// host with no anchor configured refuses before any network call.
func TestW22FakeWLSRefused(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a := openTPM(t)
	w := setup(t, a)
	doc, _ := os.ReadFile(filepath.Join(w.dir, "flavor.json"))
	_, owner, err := flavor.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	enc, key, evil := attackerImage(t, w.dir, owner.Encryption.KeyURL, []byte("the attacker's image\n"))
	evil.Meta.ID = owner.Meta.ID
	unsigned, _ := json.Marshal(evil)
	decrypt := func(url, in string, tr wla.Trust) (string, error) {
		out := filepath.Join(w.dir, "out-"+strings.ReplaceAll(t.Name(), "/", "_"))
		os.Remove(out)
		_, err := wla.DecryptImage(ctx, wla.DecryptRequest{WLS: url, ImageID: w.imageID, TPM: a, Input: in, Output: out, Trust: tr, LoopbackHTTP: true})
		return out, err
	}

	// 1. The attack as reported: unsigned flavor + attacker-wrapped key.
	out, err := decrypt(fakeWLS(t, a, unsigned, "", key, ""), enc, w.trust)
	t.Log("unsigned flavor:", err)
	if !errors.Is(err, spec.ErrIntegrity) && !errors.Is(err, spec.ErrUnsupported) {
		t.Errorf("unsigned flavor from a fake WLS: err = %v, want a refusal", err)
	}
	absent(t, out)

	// 2. The owner's genuine signed flavor relayed, but the attacker's key
	// (wrapped to the binding key) and a forged proof: refused on the proof.
	var sd flavor.Signed
	json.Unmarshal(doc, &sd)
	for _, proof := range []string{"", "eyJhbGciOiJFUzI1NiIsInR5cCI6ImNvZmZlci10cmFuc2Zlcitqd3QifQ.e30.AAAA"} {
		out, err = decrypt(fakeWLS(t, a, sd.Flavor, sd.Signature, key, proof), w.enc, w.trust)
		t.Log("genuine flavor, attacker key:", err)
		if !errors.Is(err, spec.ErrIntegrity) {
			t.Errorf("attacker-wrapped key with proof %q: err = %v, want ErrIntegrity", proof, err)
		}
		absent(t, out)
	}

	// 3. No anchor configured: refused, one line naming what is missing.
	for _, tr := range []wla.Trust{
		{BrokerKeys: w.trust.BrokerKeys, Label: "vm"},
		{Signers: w.trust.Signers, Label: "vm"},
		{Signers: w.trust.Signers, BrokerKeys: w.trust.BrokerKeys},
	} {
		out, err = decrypt(w.wlsURL, w.enc, tr)
		if !errors.Is(err, wla.ErrNoTrustAnchor) || strings.Contains(err.Error(), "\n") {
			t.Errorf("trust %+v: err = %v, want one line wrapping ErrNoTrustAnchor", tr, err)
		}
		absent(t, out)
	}
	// 4. Plain http to a non-loopback WLS, or without the explicit option.
	if _, err := wla.DecryptImage(ctx, wla.DecryptRequest{WLS: "http://wls.example:5000", ImageID: w.imageID, TPM: a, Input: w.enc, Output: out, Trust: w.trust, LoopbackHTTP: true}); !errors.Is(err, spec.ErrUnsupported) {
		t.Errorf("http WLS: err = %v, want ErrUnsupported", err)
	}
	if _, err := wla.DecryptImage(ctx, wla.DecryptRequest{WLS: w.wlsURL, ImageID: w.imageID, TPM: a, Input: w.enc, Output: out, Trust: w.trust}); !errors.Is(err, spec.ErrUnsupported) {
		t.Errorf("loopback http WLS without LoopbackHTTP: err = %v, want ErrUnsupported", err)
	}
	// The genuine path still works.
	good := filepath.Join(w.dir, "good.img")
	if err := w.decrypt(t, a, good); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(good); !bytes.Equal(got, w.plain) {
		t.Fatal("genuine decrypt differs")
	}
}

// W24: a relay rewriting /wls/images/X/… to /wls/images/Y/… hands the host
// the owner's genuine flavor and key of image Y; the host pins the flavor
// it expects for X and refuses.
func TestW24ImageSwapRefused(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a := openTPM(t)
	w := setup(t, a) // image X: label "vm"
	// image Y: another of the owner's images (label "vm-old") on the same WLS and broker
	in := filepath.Join(w.dir, "old.qcow2")
	os.WriteFile(in, []byte("an older release\n"), 0o600)
	encY := filepath.Join(w.dir, "old.enc")
	fy, err := wpm.CreateImageFlavor(ctx, wpm.ImageFlavorRequest{Label: "vm-old", Input: in, Output: encY, FlavorOut: filepath.Join(w.dir, "old.json"),
		BrokerURL: w.broker.URL, AdminKeyFile: w.broker.AdminKeyFile, SigningKey: w.key})
	if err != nil {
		t.Fatal(err)
	}
	docY, _ := os.ReadFile(filepath.Join(w.dir, "old.json"))
	if _, err := w.admin.AddFlavor(ctx, docY); err != nil {
		t.Fatal(err)
	}
	imageY := "7a1e2d3c-4b5a-4968-8776-655443322111"
	if err := w.admin.AddImage(ctx, imageY, fy.Meta.ID); err != nil {
		t.Fatal(err)
	}
	wlsURL := w.wlsURL
	relay := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		path := strings.Replace(r.URL.Path, w.imageID, imageY, 1)
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, wlsURL+path, r.Body)
		req.Header = r.Header
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			rw.WriteHeader(502)
			return
		}
		defer resp.Body.Close()
		rw.WriteHeader(resp.StatusCode)
		b := new(bytes.Buffer)
		b.ReadFrom(resp.Body)
		rw.Write(b.Bytes())
	}))
	t.Cleanup(relay.Close)
	out := filepath.Join(w.dir, "swapped.img")
	_, err = wla.DecryptImage(ctx, wla.DecryptRequest{WLS: relay.URL, ImageID: w.imageID, TPM: a, Input: encY, Output: out, Trust: w.trust, LoopbackHTTP: true})
	t.Log("swapped:", err)
	if !errors.Is(err, spec.ErrIntegrity) {
		t.Errorf("image Y's flavor for image X: err = %v, want ErrIntegrity", err)
	}
	absent(t, out)
	// pinned by flavor id too
	tr := w.trust
	tr.Label, tr.FlavorID = "", "00000000-0000-4000-8000-000000000001"
	_, err = wla.DecryptImage(ctx, wla.DecryptRequest{WLS: w.wlsURL, ImageID: w.imageID, TPM: a, Input: w.enc, Output: out, Trust: tr, LoopbackHTTP: true})
	if !errors.Is(err, spec.ErrIntegrity) {
		t.Errorf("unexpected flavor id: err = %v, want ErrIntegrity", err)
	}
	absent(t, out)
}

// A transfer cannot be repeated within its session (nor with the
// session's token): the second POST …/transfer with the same cookie is
// refused, and the proof of the first names this attestation.
func TestTransferOncePerSession(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a := openTPM(t)
	w := setup(t, a)
	doc, _ := os.ReadFile(filepath.Join(w.dir, "flavor.json"))
	_, f, _ := flavor.Parse(doc)
	_, keyID, _ := flavor.ParseKeyURL(f.Encryption.KeyURL)
	post := func(path, cookie string, v any) (*http.Response, []byte) {
		body, _ := json.Marshal(v)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, w.broker.URL+path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if cookie != "" {
			req.AddCookie(&http.Cookie{Name: protocol.SessionCookie, Value: cookie})
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b := new(bytes.Buffer)
		b.ReadFrom(resp.Body)
		return resp, b.Bytes()
	}
	resp, body := post(protocol.PathAuth, "", protocol.Request{Version: protocol.Version, Tee: protocol.TeeTPM, ExtraParams: json.RawMessage(`""`)})
	var ch protocol.Challenge
	json.Unmarshal(body, &ch)
	var sess string
	for _, c := range resp.Cookies() {
		if c.Name == protocol.SessionCookie {
			sess = c.Value
		}
	}
	kr, err := wla.Prove(ctx, a, &wlsclient.Challenge{Tee: protocol.TeeTPM, Nonce: ch.Nonce, Session: sess})
	if err != nil {
		t.Fatal(err)
	}
	if resp, body := post(protocol.PathAttest, sess, kr.Attestation); resp.StatusCode != 200 {
		t.Fatalf("attest: %d %s", resp.StatusCode, body)
	}
	path := protocol.PathKeyTransfer + keyID + protocol.PathTransferSuffix
	resp, body = post(path, sess, protocol.KeyTransferRequest{BindingKey: kr.BindingKey})
	if resp.StatusCode != 200 {
		t.Fatalf("first transfer: %d %s", resp.StatusCode, body)
	}
	var tr protocol.KeyTransferResponse
	json.Unmarshal(body, &tr)
	wrapped, _ := base64.StdEncoding.DecodeString(tr.WrappedKey)
	if err := wla.CheckTransfer(tr.Proof, w.trust.BrokerKeys, kr, keyID, wrapped, time.Now()); err != nil {
		t.Fatalf("the first transfer's proof: %v", err)
	}
	if err := wla.CheckTransfer(tr.Proof, w.trust.BrokerKeys, kr, "00000000-0000-4000-8000-000000000000", wrapped, time.Now()); !errors.Is(err, spec.ErrIntegrity) {
		t.Errorf("proof for another key id accepted: %v", err)
	}
	// the same genuine release replayed later (a relay kept it and hands the host the old nonce)
	if err := wla.CheckTransfer(tr.Proof, w.trust.BrokerKeys, kr, keyID, wrapped, time.Now().Add(wla.MaxProofAge+time.Minute)); !errors.Is(err, spec.ErrIntegrity) {
		t.Errorf("a proof older than MaxProofAge accepted: %v", err)
	}
	resp, body = post(path, sess, protocol.KeyTransferRequest{BindingKey: kr.BindingKey})
	t.Logf("second transfer: %d %s", resp.StatusCode, body)
	if resp.StatusCode != http.StatusUnauthorized || !bytes.Contains(body, []byte("already had its key transfer")) {
		t.Errorf("second transfer in the same session: HTTP %d %s, want 401", resp.StatusCode, body)
	}
}
