package imagepolicy

import (
	"context"
	"crypto"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigstore/sigstore-go/pkg/root"
)

// Cases that need something coffer deliberately does not do offline; each
// is named with the reason (none is skipped silently).
var conformanceSkip = map[string]string{}

// TestSigstoreConformanceBundles runs every bundle-verify case of the
// sigstore-conformance suite (testdata/sigstore-conformance, see its
// README for the commit) through VerifyBundle: a "_fail" case must be
// refused, every other accepted.
func TestSigstoreConformanceBundles(t *testing.T) {
	base := filepath.Join("testdata", "sigstore-conformance")
	dirs, err := os.ReadDir(filepath.Join(base, "bundle-verify"))
	if err != nil {
		t.Fatal(err)
	}
	publicGood, err := os.ReadFile(filepath.Join(base, "trusted-root-public-good.json"))
	if err != nil {
		t.Fatal(err)
	}
	defArtifact, err := os.ReadFile(filepath.Join(base, "bundle-verify", "a.txt"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		name := d.Name()
		n++
		t.Run(name, func(t *testing.T) {
			if why, ok := conformanceSkip[name]; ok {
				t.Skip(why)
			}
			dir := filepath.Join(base, "bundle-verify", name)
			read := func(f string, def []byte) []byte {
				b, err := os.ReadFile(filepath.Join(dir, f))
				if errors.Is(err, os.ErrNotExist) {
					return def
				}
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
			bundleJSON := read("bundle.sigstore.json", nil)
			if bundleJSON == nil {
				t.Fatal("no bundle.sigstore.json")
			}
			// A trusted root or key coffer refuses to load is a refusal
			// too (checked like a verification error below).
			tr, err := root.NewTrustedRootFromJSON(read("trusted_root.json", publicGood))
			trust := BundleTrust{TrustedRoot: tr,
				Issuer:  strings.TrimSpace(string(read("issuer", []byte("https://token.actions.githubusercontent.com")))),
				Subject: strings.TrimSpace(string(read("identity", []byte("https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main")))),
			}
			if k := read("key.pub", nil); k != nil && err == nil {
				var pub crypto.PublicKey
				pub, err = ParsePublicKey(k)
				trust.Keys = []crypto.PublicKey{pub}
			}
			sum := sha256.Sum256(read("artifact", defArtifact))
			if err == nil {
				_, err = VerifyBundle(context.Background(), bundleJSON, trust, sum[:])
			}
			if strings.HasSuffix(name, "_fail") {
				if err == nil {
					t.Fatal("accepted a bundle the suite says must fail")
				}
				t.Logf("refused: %v", err)
			} else if err != nil {
				t.Fatalf("refused a good bundle: %v", err)
			}
		})
	}
	if n < 60 {
		t.Fatalf("only %d cases found", n)
	}
}
