package e2e

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/internal/testutil"
	"github.com/coffer-dev/coffer/spec"
)

// ML-KEM-768 recipients through the verbs: keygen, encrypt, encrypt adding
// an RSA recipient, inspect, decrypt with either key, rekey to another
// ML-KEM key; skopeo (ocicrypt) decrypts the mixed image with the RSA key,
// skipping the ML-KEM entry that comes first in the layer's jwe list.
func TestMLKEMRecipient(t *testing.T) {
	k := newKeys(t)
	dir := t.TempDir()
	pq, pq2, stranger := filepath.Join(dir, "pq.jwk"), filepath.Join(dir, "pq2.jwk"), filepath.Join(dir, "stranger.jwk")
	for _, p := range []string{pq, pq2, stranger} {
		if out := mustCoffer(t, "keygen", "--type", "mlkem768", "--kid", filepath.Base(p), "--out", p); !strings.Contains(out, p+".pub") {
			t.Errorf("keygen said %q", out)
		}
	}
	if _, _, err := coffer(t, "keygen", "--out", pq); !errors.Is(err, spec.ErrExists) {
		t.Errorf("keygen over an existing key: %v", err)
	}
	src := writeLayout(t, ociImage(t, 2), "v1")
	orig := layerDigests(t, src)

	pqOnly := ref(filepath.Join(t.TempDir(), "pq"), "v1")
	mustCoffer(t, "encrypt", "--recipient", "mlkem:"+pq+".pub", src, pqOnly)
	// Add an RSA recipient, opening the layers with the ML-KEM key: the
	// jwe list is then [ML-KEM entry, RSA entry].
	mixed := ref(filepath.Join(t.TempDir(), "mixed"), "v1")
	mustCoffer(t, "encrypt", "--key", pq, "--recipient", "jwe:"+k.rsaPub, pqOnly, mixed)

	out := mustCoffer(t, "inspect", mixed)
	if !strings.Contains(out, "alg=ML-KEM-768+A192KW enc=A256GCM kid=pq.jwk") || !strings.Contains(out, "alg=RSA-OAEP") {
		t.Errorf("inspect does not list both recipients:\n%s", out)
	}
	for name, key := range map[string]string{"ML-KEM key": pq, "RSA key": k.rsaPriv} {
		dec := ref(filepath.Join(t.TempDir(), "dec"), "v1")
		mustCoffer(t, "decrypt", "--key", key, mixed, dec)
		if got := layerDigests(t, dec); !equalHashes(got, orig) {
			t.Errorf("%s: decrypted layers %v, want %v", name, got, orig)
		}
	}
	if _, _, err := coffer(t, "decrypt", "--key", stranger, mixed, ref(filepath.Join(t.TempDir(), "x"), "v1")); !errors.Is(err, spec.ErrNoKey) {
		t.Errorf("another ML-KEM key: %v, want ErrNoKey", err)
	}

	// Rekey to pq2 only: pq no longer opens it, pq2 does.
	rekeyed := ref(filepath.Join(t.TempDir(), "rekeyed"), "v1")
	mustCoffer(t, "rekey", "--key", pq, "--recipient", "mlkem:"+pq2+".pub", mixed, rekeyed)
	if _, _, err := coffer(t, "decrypt", "--key", pq, rekeyed, ref(filepath.Join(t.TempDir(), "x"), "v1")); !errors.Is(err, spec.ErrNoKey) {
		t.Errorf("old key after rekey: %v, want ErrNoKey", err)
	}
	dec := ref(filepath.Join(t.TempDir(), "dec2"), "v1")
	mustCoffer(t, "decrypt", "--key", pq2, rekeyed, dec)
	if got := layerDigests(t, dec); !equalHashes(got, orig) {
		t.Errorf("after rekey: layers %v, want %v", got, orig)
	}

	t.Run("skopeo skips the ML-KEM entry", func(t *testing.T) {
		testutil.RequireTool(t, "skopeo")
		dec := ref(filepath.Join(t.TempDir(), "skopeo"), "v1")
		run(t, "skopeo", "copy", "-q", "--decryption-key", k.rsaPriv, mixed, dec)
		if got := layerDigests(t, dec); !equalHashes(got, orig) {
			t.Errorf("skopeo-decrypted layers %v, want %v", got, orig)
		}
	})
}
