package imagepolicy_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/coffer-dev/coffer/imagepolicy"
	"github.com/coffer-dev/coffer/resource"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
)

// A digest pin: the owner records the manifest digest of what it wrote;
// the trusted side refuses anything else under that name. A map stands in
// for the broker here (coffer encrypt --kbs writes the pin with the admin
// API, coffer pull --kbs reads it after attestation).
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "coffer-pin-")
	defer os.RemoveAll(dir)
	ref, _ := transport.Parse("oci:" + filepath.Join(dir, "app") + ":v1")
	broker := map[string][]byte{}

	// Owner: write the image and pin it.
	img, _ := random.Image(256, 2)
	_ = transport.Write(ctx, ref, transport.Artifact{Image: img})
	id, _ := imagepolicy.Identity(ref)
	pin, _ := imagepolicy.PinFor(transport.Artifact{Image: img}, id)
	raw, _ := pin.Marshal()
	broker[imagepolicy.PinPath("default", id).String()] = raw

	// Trusted side: check before pulling.
	chk, _ := imagepolicy.New(imagepolicy.WithPins(resource.GetterFunc(func(_ context.Context, p resource.Path) ([]byte, error) {
		if b, ok := broker[p.String()]; ok {
			return b, nil
		}
		return nil, spec.ErrNotFound
	})))
	res, err := chk.Check(ctx, ref, v1.Platform{})
	fmt.Println("untampered:", err, len(res.Vouched))

	// Someone replaces the image under the same tag.
	other, _ := random.Image(256, 2)
	_ = transport.Write(ctx, ref, transport.Artifact{Image: other})
	_, err = chk.Check(ctx, ref, v1.Platform{})
	fmt.Println("replaced:", errors.Is(err, spec.ErrIntegrity))
	// Output:
	// untampered: <nil> 1
	// replaced: true
}

// Signing with a key and verifying under a containers-policy.json
// sigstoreSigned requirement. The signature goes where cosign puts it: the
// sha256-<hex>.sig tag next to the image (here in an OCI layout, so the
// name it is signed as is given).
func ExampleSign() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "coffer-sign-")
	defer os.RemoveAll(dir)
	ref, _ := transport.Parse("oci:" + filepath.Join(dir, "app") + ":v1")
	img, _ := random.Image(256, 1)
	_ = transport.Write(ctx, ref, transport.Artifact{Image: img})

	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, err := imagepolicy.Sign(ctx, ref, key, imagepolicy.WithSignedIdentity("reg.example/app:v1"))
	fmt.Println("signed:", err, strings.HasSuffix(s.At.String(), imagepolicy.SignatureTag(s.Digest)))

	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	policy, _ := imagepolicy.ParsePolicy([]byte(fmt.Sprintf(`{"default": [{"type": "sigstoreSigned", "keyData": %q,
		"signedIdentity": {"type": "exactReference", "dockerReference": "reg.example/app:v1"}}]}`, base64.StdEncoding.EncodeToString(pub))))
	chk, _ := imagepolicy.New(imagepolicy.WithPolicy(policy), imagepolicy.WithRequireSignature(true))
	_, err = chk.Check(ctx, ref, v1.Platform{})
	fmt.Println("verified:", err)
	// Output:
	// signed: <nil> true
	// verified: <nil>
}
