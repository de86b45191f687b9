// Package e2e runs coffer's verbs in-process against real files, registries
// and the reference tools (skopeo, docker-registry).
package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/coffer-dev/coffer/internal/cli"
)

// coffer runs a verb in-process and returns stdout, stderr and the error.
func coffer(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	root := cli.NewRoot()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(args)
	err := root.ExecuteContext(t.Context())
	return out.String(), errb.String(), err
}

func mustCoffer(t *testing.T, args ...string) string {
	t.Helper()
	out, stderr, err := coffer(t, args...)
	if err != nil {
		t.Fatalf("coffer %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return out
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// ociImage builds an OCI image (OCI layer media types) with n layers.
func ociImage(t *testing.T, n int) v1.Image {
	t.Helper()
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	for i := range n {
		l, err := random.Layer(int64(2048*(i+1)), types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

// writeLayout stores img in a new OCI layout under tag and returns "oci:DIR:TAG".
func writeLayout(t *testing.T, img v1.Image, tag string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "src")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag})); err != nil {
		t.Fatal(err)
	}
	return "oci:" + dir + ":" + tag
}

// layoutDigest returns the manifest digest stored for ref ("oci:DIR:TAG").
func layoutDigest(t *testing.T, ref string) v1.Hash {
	t.Helper()
	dir, tag, _ := strings.Cut(strings.TrimPrefix(ref, "oci:"), ":")
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range im.Manifests {
		if d.Annotations["org.opencontainers.image.ref.name"] == tag {
			return d.Digest
		}
	}
	t.Fatalf("%s: tag %q not found", dir, tag)
	return v1.Hash{}
}

type keyset struct {
	dir                      string
	rsaPriv, rsaPub, rsaCert string
	ecPriv, ecPub            string
}

func writePEM(t *testing.T, path, typ string, der []byte) string {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func newKeys(t *testing.T) keyset {
	t.Helper()
	d := t.TempDir()
	k := keyset{dir: d}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(rk)
	k.rsaPriv = writePEM(t, filepath.Join(d, "rsa.pem"), "PRIVATE KEY", der)
	pub, _ := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	k.rsaPub = writePEM(t, filepath.Join(d, "rsa.pub.pem"), "PUBLIC KEY", pub)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "coffer test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageKeyEncipherment,
	}
	cert, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &rk.PublicKey, rk)
	if err != nil {
		t.Fatal(err)
	}
	k.rsaCert = writePEM(t, filepath.Join(d, "rsa.crt"), "CERTIFICATE", cert)
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ = x509.MarshalPKCS8PrivateKey(ek)
	k.ecPriv = writePEM(t, filepath.Join(d, "ec.pem"), "PRIVATE KEY", der)
	pub, _ = x509.MarshalPKIXPublicKey(&ek.PublicKey)
	k.ecPub = writePEM(t, filepath.Join(d, "ec.pub.pem"), "PUBLIC KEY", pub)
	return k
}

func ref(dir, tag string) string { return fmt.Sprintf("oci:%s:%s", dir, tag) }
