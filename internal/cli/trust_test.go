package cli

import (
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/coffer-dev/coffer/internal/demo"
	"github.com/coffer-dev/coffer/kbs/kbstest"
)

// certFile writes the test server's certificate (its own CA) as PEM.
func certFile(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// A broker and a registry behind a private CA: refused with a line naming
// --cacert, trusted with --cacert FILE or COFFER_CACERT, on admin verbs,
// image verbs and the attesting client alike.
func TestCACertTrustsAPrivateCA(t *testing.T) {
	b := kbstest.New(t)
	b.AllowAll(t)
	b.AffirmSample(t)
	kbsTLS := httptest.NewTLSServer(b.Server)
	t.Cleanup(kbsTLS.Close)
	regTLS := httptest.NewTLSServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(regTLS.Close)
	kbsCA, regCA := certFile(t, kbsTLS), certFile(t, regTLS)
	both := filepath.Join(t.TempDir(), "both.pem")
	k, _ := os.ReadFile(kbsCA)
	r, _ := os.ReadFile(regCA)
	if err := os.WriteFile(both, append(k, r...), 0o644); err != nil {
		t.Fatal(err)
	}

	list := []string{"kbs", "list-resources", "--url", kbsTLS.URL, "--admin-key", b.AdminKeyFile}
	_, err := runCoffer(t, "", list...)
	if err == nil || !strings.Contains(Explain(err).Error(), "--cacert FILE or COFFER_CACERT") {
		t.Fatalf("untrusted broker: %v, want an x509 error naming --cacert", Explain(err))
	}
	if out, err := runCoffer(t, "", append(list, "--cacert", kbsCA)...); err != nil {
		t.Fatalf("--cacert: %v\n%s", err, out)
	}
	t.Setenv("COFFER_CACERT", kbsCA)
	if out, err := runCoffer(t, "", list...); err != nil {
		t.Fatalf("COFFER_CACERT: %v\n%s", err, out)
	}

	dir := t.TempDir()
	if err := demo.WriteImage(filepath.Join(dir, "app"), "v1"); err != nil {
		t.Fatal(err)
	}
	dst := "docker://" + strings.TrimPrefix(regTLS.URL, "https://") + "/app:enc"
	enc := []string{"encrypt", "--kbs", kbsTLS.URL, "--admin-key", b.AdminKeyFile, "--key-id", "default/image_key/app", "oci:" + filepath.Join(dir, "app") + ":v1", dst}
	t.Setenv("COFFER_CACERT", "")
	if out, err := runCoffer(t, "", append(enc, "--cacert", both)...); err != nil {
		t.Fatalf("encrypt --cacert: %v\n%s", err, out)
	}
	if out, err := runCoffer(t, "", "pull", "--cacert", both, "--kbs", kbsTLS.URL, "--tee", "sample", dst, filepath.Join(dir, "rootfs")); err != nil {
		t.Fatalf("pull --cacert: %v\n%s", err, out)
	}
	// (httptest's servers share one certificate: the registry's own checks.)
	if _, err := runCoffer(t, "", "inspect", dst); err == nil || !strings.Contains(Explain(err).Error(), "--cacert") {
		t.Errorf("registry behind an untrusted CA: %v, want an error naming --cacert", Explain(err))
	}
	if out, err := runCoffer(t, "", "inspect", "--cacert", regCA, dst); err != nil {
		t.Errorf("inspect --cacert: %v\n%s", err, out)
	}
	if _, err := runCoffer(t, "", append(list, "--cacert", filepath.Join(dir, "app", "index.json"))...); !errors.Is(err, ErrUsage) {
		t.Errorf("--cacert of a file without certificates: %v, want a usage error", err)
	}

	// SecL's "cmd" keyprovider creates each key in the owner's broker: the same trust.
	wrapIn := `{"op":"keywrap","keywrapparams":{"ec":{"Parameters":{"isecl":["YW55"]},"DecryptConfig":{"Parameters":{}}},"optsdata":"e30="},"keyunwrapparams":{"dc":null,"annotation":null}}`
	wk := []string{"wpm", "get-ocicrypt-wrappedkey", "--kbs", kbsTLS.URL, "--admin-key", b.AdminKeyFile}
	if _, err := runCoffer(t, wrapIn, wk...); err == nil || !strings.Contains(Explain(err).Error(), "--cacert") {
		t.Errorf("get-ocicrypt-wrappedkey, broker behind an untrusted CA: %v, want an error naming --cacert", Explain(err))
	}
	if out, err := runCoffer(t, wrapIn, append(wk, "--cacert", kbsCA)...); err != nil || !strings.Contains(out, "keywrapresults") {
		t.Errorf("get-ocicrypt-wrappedkey --cacert: %v\n%s", err, out)
	}
}
