package imagepolicy_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sigstore/sigstore-go/pkg/root"

	"github.com/coffer-dev/coffer/imagepolicy"
	"github.com/coffer-dev/coffer/spec"
)

// Verify a keyless sigstore bundle offline against a trusted_root.json
// and a certificate identity (here a conformance case over a file; for
// images, a sigstoreSigned policy does this with the manifest digest).
func ExampleVerifyBundle() {
	td := filepath.Join("testdata", "sigstore-conformance")
	tr, _ := root.NewTrustedRootFromPath(filepath.Join(td, "trusted-root-public-good.json"))
	bundle, _ := os.ReadFile(filepath.Join(td, "bundle-verify", "happy-path-v0.3", "bundle.sigstore.json"))
	artifact, _ := os.ReadFile(filepath.Join(td, "bundle-verify", "a.txt"))
	trust := imagepolicy.BundleTrust{TrustedRoot: tr,
		Issuer:  "https://token.actions.githubusercontent.com",
		Subject: "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"}
	sum := sha256.Sum256(artifact)
	_, err := imagepolicy.VerifyBundle(context.Background(), bundle, trust, sum[:])
	fmt.Println("verified:", err)

	other := sha256.Sum256(append(artifact, '!'))
	_, err = imagepolicy.VerifyBundle(context.Background(), bundle, trust, other[:])
	fmt.Println("another artifact refused:", errors.Is(err, spec.ErrIntegrity))
	// Output:
	// verified: <nil>
	// another artifact refused: true
}
