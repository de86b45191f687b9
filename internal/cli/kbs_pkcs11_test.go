package cli

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/kbs/attest"
	"github.com/coffer-dev/coffer/kbs/kbstest"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/kbs/token"
	"github.com/coffer-dev/coffer/keywrap/pkcs11/pkcs11test"
	"github.com/coffer-dev/coffer/spec"
)

// sampleToken runs auth → attest with the sample TEE and returns the
// broker's attestation token.
func sampleToken(t *testing.T, url string) string {
	t.Helper()
	_, pub, _ := protocol.GenerateTeeKey()
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar}
	post := func(p string, v, out any) {
		body, _ := json.Marshal(v)
		resp, err := hc.Post(url+p, protocol.ContentTypeJSON, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("%s: %d %s", p, resp.StatusCode, b)
		}
		_ = json.NewDecoder(resp.Body).Decode(out)
	}
	var ch protocol.Challenge
	post(protocol.PathAuth, protocol.Request{Version: protocol.Version, Tee: protocol.TeeSample, ExtraParams: json.RawMessage(`""`)}, &ch)
	d, _ := protocol.ReportDataDigest(ch.Nonce, pub, "")
	var ar protocol.AttestResponse
	post(protocol.PathAttest, protocol.Attestation{RuntimeData: protocol.RuntimeData{Nonce: ch.Nonce, TeePubKey: pub},
		TeeEvidence: protocol.CompositeEvidence{PrimaryEvidence: attest.SampleEvidence("1", d)}}, &ar)
	return ar.Token
}

// TestKBSBrokerKeysInToken: the admin key (Ed25519) and the token-signing
// key (P-256) live in a SoftHSM2 token. coffer kbs admin-public-key
// exports the admin key's public key; a broker started with it and with
// --token-key pkcs11:… accepts admin calls signed on the token, refuses
// them when it holds another key, and issues attestation tokens whose
// signature verifies with the token key's public key. A wrong PIN is one
// line, exit 9.
func TestKBSBrokerKeysInToken(t *testing.T) {
	tok := pkcs11test.New(t)
	_, adminKey, _ := ed25519.GenerateKey(rand.Reader)
	earKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tok.Import(adminKey, "admin", "0a")
	tok.Import(earKey, "ear", "0b")
	t.Setenv("SOFTHSM2_CONF", tok.Conf) // the URI form carries no module env
	t.Setenv("OCICRYPT_CONFIG", "")
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Setenv("HOME", t.TempDir())
	modDir := filepath.Dir(pkcs11test.Module)
	adminURI := tok.URI("admin", "0a", "pin-value="+pkcs11test.PIN)
	earURI := tok.URI("ear", "0b", "pin-value="+pkcs11test.PIN)
	dir := t.TempDir()

	// Without --pkcs11-module-dir (and no ocicrypt config) no module loads.
	if _, err := runCoffer(t, "", "kbs", "admin-public-key", "--admin-key", adminURI); !errors.Is(err, spec.ErrPolicyDenied) {
		t.Fatalf("module not allowed: got %v, want ErrPolicyDenied", err)
	}
	pubPEM, err := runCoffer(t, "", "kbs", "admin-public-key", "--admin-key", adminURI, "--pkcs11-module-dir", modDir)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := token.ParseAdminPublicKey([]byte(pubPEM))
	if err != nil || !pub.Equal(adminKey.Public()) {
		t.Fatalf("admin-public-key: %v, or not the token's key:\n%s", err, pubPEM)
	}
	pubFile := filepath.Join(dir, "admin.pub")
	_ = os.WriteFile(pubFile, []byte(pubPEM), 0o644)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	done := make(chan error, 1)
	ctx := t.Context()
	go func() {
		root := NewRoot()
		var log bytes.Buffer
		root.SetOut(&log)
		root.SetErr(&log)
		root.SetArgs([]string{"kbs", "serve", "--listen", addr, "--store", "memory", "--admin-public-key", pubFile,
			"--token-key", earURI, "--pkcs11-module-dir", modDir, "--allow-sample-tee"})
		err := root.ExecuteContext(ctx)
		if strings.Contains(log.String(), pkcs11test.PIN) {
			err = errors.Join(err, errors.New("serve logged the PIN"))
		}
		done <- err
	}()
	url := "http://" + addr
	for i := 0; ; i++ {
		if resp, err := http.Get(url + "/healthz"); err == nil {
			resp.Body.Close()
			break
		}
		select {
		case err := <-done:
			t.Fatalf("serve: %v", err)
		default:
		}
		if i > 300 {
			t.Fatal("broker did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Admin calls signed on the token: the URI, and a pkcs11 key file.
	kek := filepath.Join(dir, "kek")
	_ = os.WriteFile(kek, []byte("0123456789abcdef0123456789abcdef"), 0o600)
	keyFile := tok.KeyFile("admin.yaml", adminURI)
	for _, key := range []string{adminURI, keyFile} {
		admin := []string{"--url", url, "--admin-key", key, "--pkcs11-module-dir", modDir}
		if out, err := runCoffer(t, "", append([]string{"kbs", "set-resource", "--path", "default/image_key/app", "--resource-file", kek}, admin...)...); err != nil {
			t.Fatalf("set-resource with %s: %v %s", filepath.Base(key), err, out)
		}
	}
	admin := []string{"--url", url, "--admin-key", adminURI, "--pkcs11-module-dir", modDir}
	for _, rv := range [][]string{{"launch_digest", "abcde"}, {"svn", "1"}} {
		if out, err := runCoffer(t, "", append(append([]string{"kbs", "set-reference-value"}, rv...), admin...)...); err != nil {
			t.Fatalf("set-reference-value: %v %s", err, out)
		}
	}
	// An offline token signed on the token, too.
	if out, err := runCoffer(t, "", "kbs", "admin-token", "--admin-key", adminURI, "--pkcs11-module-dir", modDir, "--ttl", "1m"); err != nil {
		t.Fatalf("admin-token: %v %s", err, out)
	} else if _, err := token.VerifyAdmin(strings.TrimSpace(out), []ed25519.PublicKey{pub}, token.AdminCheck{}, time.Now()); err != nil {
		t.Fatalf("admin-token from the token: %v", err)
	}

	// The attestation token verifies with the token key's public key.
	ear := sampleToken(t, url)
	if _, err := token.VerifyJWS(ear, "JWT", []*ecdsa.PublicKey{&earKey.PublicKey}); err != nil {
		t.Fatalf("attestation token vs the token's P-256 key: %v", err)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := token.VerifyJWS(ear, "JWT", []*ecdsa.PublicKey{&other.PublicKey}); err == nil {
		t.Fatal("attestation token verifies with an unrelated key")
	}
	if s, _ := token.NewSigner(earKey, "", 0); s != nil {
		if v, err := s.Verify(ear, time.Now()); err != nil || v.Status != token.StatusAffirming {
			t.Fatalf("attestation token: %v %v, want affirming", v, err)
		}
	}

	// A broker holding another admin key refuses the token's signature.
	b := kbstest.New(t)
	if _, err := runCoffer(t, "", "kbs", "set-resource", "--url", b.URL, "--admin-key", adminURI, "--pkcs11-module-dir", modDir,
		"--path", "default/image_key/app", "--resource-file", kek); err == nil || ExitCode(err) == 0 {
		t.Fatalf("broker with another admin key: got %v, want a refusal", err)
	}

	// Wrong PIN: one line, exit 9, no PIN shown.
	bad := tok.URI("admin", "0a", "pin-value=98765")
	_, err = runCoffer(t, "", "kbs", "set-resource", "--url", url, "--admin-key", bad, "--pkcs11-module-dir", modDir, "--path", "default/k/x", "--resource-file", kek)
	if err == nil || !strings.Contains(err.Error(), `pkcs11: token "coffer" refused the PIN (CKR_PIN_INCORRECT)`) || ExitCode(err) != 9 ||
		strings.Contains(err.Error(), "98765") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("wrong PIN: got %v (exit %d)", err, ExitCode(err))
	}
	if _, err := runCoffer(t, "", "kbs", "serve", "--listen", "127.0.0.1:0", "--store", "memory", "--admin-public-key", pubFile,
		"--token-key", tok.URI("ear", "0b", "pin-value=98765"), "--pkcs11-module-dir", modDir); err == nil ||
		!strings.Contains(err.Error(), "refused the PIN (CKR_PIN_INCORRECT)") || strings.Contains(err.Error(), "98765") {
		t.Fatalf("serve with a wrong token-key PIN: got %v", err)
	}
	// A P-256 key is no admin key, and an Ed25519 key no token key.
	if _, err := runCoffer(t, "", "kbs", "admin-token", "--admin-key", earURI, "--pkcs11-module-dir", modDir); !errors.Is(err, spec.ErrUnsupported) {
		t.Fatalf("P-256 admin key: got %v, want ErrUnsupported", err)
	}
	if _, err := runCoffer(t, "", "kbs", "serve", "--listen", "127.0.0.1:0", "--store", "memory", "--admin-public-key", pubFile,
		"--token-key", adminURI, "--pkcs11-module-dir", modDir); !errors.Is(err, spec.ErrUnsupported) || strings.Contains(err.Error(), pkcs11test.PIN) {
		t.Fatalf("Ed25519 token key: got %v, want ErrUnsupported without the PIN", err)
	}
	select {
	case err := <-done:
		t.Fatalf("serve ended early: %v", err)
	default:
	}
}
