package e2e

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/keywrap/keys/keystest"
	"github.com/coffer-dev/coffer/keywrap/pkcs11/pkcs11test"
	"github.com/coffer-dev/coffer/spec"
)

// pkcs11 recipients through the verbs, on a SoftHSM2 token: encrypt for a
// token key file and an RSA public key, inspect, decrypt with the token's
// key file (module allowed by --pkcs11-module-dir or OCICRYPT_CONFIG),
// then the one-line refusals (wrong PIN, missing object, module not
// allowed). Debian's skopeo 1.9 is built without ocicrypt's pkcs11 scheme,
// so ocicrypt's own library (v1.3) is the oracle: keywrap/pkcs11's
// TestOcicryptInterop and keywrap/recipients' TestOcicryptPKCS11.
func TestPKCS11Recipient(t *testing.T) {
	tok := pkcs11test.New(t)
	t.Setenv("OCICRYPT_OAEP_HASHALG", "sha1") // what SoftHSM 2.6 decrypts
	t.Setenv("OCICRYPT_CONFIG", "")
	rk := keystest.RSA(t, 0)
	tok.Import(rk, "k1", "01")
	pubPEM := keystest.Write(t, tok.Dir, "k2.pub.pem", keystest.PEM("PUBLIC KEY", keystest.PKIX(t, &keystest.RSA(t, 1).PublicKey)))
	recipient := tok.KeyFile("k1.pub.yaml", tok.URI("k1", "01", ""))
	key := tok.KeyFile("k1.yaml", tok.URI("k1", "01", "pin-value="+pkcs11test.PIN))
	moduleDir := filepath.Dir(pkcs11test.Module)

	src := writeLayout(t, ociImage(t, 2), "v1")
	orig := layerDigests(t, src)
	enc := ref(filepath.Join(t.TempDir(), "enc"), "v1")
	mustCoffer(t, "encrypt", "--pkcs11-module-dir", moduleDir, "--recipient", "pkcs11:"+recipient, "--recipient", "pkcs11:"+pubPEM, src, enc)
	if out := mustCoffer(t, "inspect", enc); strings.Count(out, "pkcs11 RSA-OAEP-SHA1 2048-bit") < 2 {
		t.Errorf("inspect does not list both pkcs11 recipients:\n%s", out)
	}

	dec := ref(filepath.Join(t.TempDir(), "dec"), "v1")
	mustCoffer(t, "decrypt", "--pkcs11-module-dir", moduleDir, "--key", key, enc, dec)
	if got := layerDigests(t, dec); !equalHashes(got, orig) {
		t.Errorf("decrypted layers %v, want %v", got, orig)
	}
	conf := keystest.Write(t, tok.Dir, "ocicrypt.conf", []byte("pkcs11:\n  allowed-module-paths:\n  - "+pkcs11test.Module+"\n"))
	t.Run("OCICRYPT_CONFIG", func(t *testing.T) {
		t.Setenv("OCICRYPT_CONFIG", conf)
		dec := ref(filepath.Join(t.TempDir(), "dec"), "v1")
		mustCoffer(t, "decrypt", "--key", key, enc, dec)
		if got := layerDigests(t, dec); !equalHashes(got, orig) {
			t.Errorf("decrypted layers %v, want %v", got, orig)
		}
	})

	for _, tc := range []struct {
		name, uri string
		args      []string
		want      error
		msg       string
	}{
		{"wrong PIN", tok.URI("k1", "01", "pin-value=9876"), []string{"--pkcs11-module-dir", moduleDir}, spec.ErrUnauthorized,
			`pkcs11: token "coffer" refused the PIN (CKR_PIN_INCORRECT)`},
		{"missing object", tok.URI("k7", "07", "pin-value="+pkcs11test.PIN), []string{"--pkcs11-module-dir", moduleDir}, spec.ErrNotFound,
			`pkcs11: token "coffer" has no private key object="k7" id=%07`},
		{"module not allowed", tok.URI("k1", "01", "pin-value="+pkcs11test.PIN), nil, spec.ErrPolicyDenied,
			"is not allowed by policy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := tok.KeyFile(strings.ReplaceAll(tc.name, " ", "-")+".yaml", tc.uri)
			args := append(append([]string{"decrypt"}, tc.args...), "--key", bad, enc, ref(filepath.Join(t.TempDir(), "x"), "v1"))
			_, stderr, err := coffer(t, args...)
			if err == nil || !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v containing %q", err, tc.want, tc.msg)
			}
			if strings.Contains(err.Error(), "\n") || strings.Contains(err.Error()+stderr, "9876") || strings.Contains(err.Error()+stderr, "pin-value="+pkcs11test.PIN) {
				t.Errorf("not one line, or shows a PIN: %q\n%s", err, stderr)
			}
		})
	}

}
