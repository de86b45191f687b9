package pull

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/elliptic"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/coffer-dev/coffer/imagecrypt"
	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/keywrap/jwe"
	"github.com/coffer-dev/coffer/keywrap/keys/keystest"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
)

func tarLayer(t *testing.T, files map[string]string) v1.Layer {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for name, body := range files {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(body)), Typeflag: tar.TypeReg})
		io.WriteString(tw, body)
	}
	tw.Close()
	return static.NewLayer(b.Bytes(), types.OCIUncompressedLayer)
}

// fixture pushes an image encrypted for a fresh EC key to an in-process
// registry and returns its reference and the key's unwrapper.
func fixture(t *testing.T) (transport.Reference, keywrap.Unwrapper, v1.Image) {
	t.Helper()
	return encryptedImage(t, "docker://",
		tarLayer(t, map[string]string{"secret": "s3cr3t model weights", "etc/old": "x"}),
		tarLayer(t, map[string]string{"etc/.wh.old": "", "app/run": "#!/bin/sh"}))
}

// encryptedImage encrypts an image of layers for a fresh EC key and writes
// it to an in-process registry (transport "docker://") or to an OCI layout
// in a temp dir ("oci:"), returning its reference and the key's unwrapper.
func encryptedImage(t *testing.T, transportName string, layers ...v1.Layer) (transport.Reference, keywrap.Unwrapper, v1.Image) {
	t.Helper()
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := img.ConfigFile()
	cfg.Config.Cmd = []string{"/app/run"}
	cfg.OS, cfg.Architecture = "linux", "amd64"
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		t.Fatal(err)
	}
	key := keystest.EC(t, elliptic.P256())
	w, err := jwe.NewWrapper([]jwe.Recipient{{Key: &key.PublicKey}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := imagecrypt.Encrypt(context.Background(), imagecrypt.Artifact{Image: img}, []keywrap.Wrapper{w})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	where := t.TempDir() + ":enc"
	if transportName == "docker://" {
		srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
		t.Cleanup(srv.Close)
		where = strings.TrimPrefix(srv.URL, "http://") + "/app:enc"
	}
	ref, err := transport.Parse(transportName + where)
	if err != nil {
		t.Fatal(err)
	}
	if err := transport.Write(context.Background(), ref, transport.Artifact(res.Artifact)); err != nil {
		t.Fatal(err)
	}
	u, err := jwe.NewUnwrapper(key)
	if err != nil {
		t.Fatal(err)
	}
	return ref, u, res.Image
}

func TestPullUnpacksVerifiedLayers(t *testing.T) {
	ref, key, _ := fixture(t)
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	if err := Pull(context.Background(), ref, rootfs, WithKeys(key), WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"})); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(rootfs, "secret"))
	if err != nil || string(got) != "s3cr3t model weights" {
		t.Errorf("/secret = %q, %v", got, err)
	}
	if _, err := os.Lstat(filepath.Join(rootfs, "etc", "old")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("whiteout not applied: %v", err)
	}
	cfg, err := os.ReadFile(rootfs + ".config.json")
	if err != nil || !strings.Contains(string(cfg), `"/app/run"`) {
		t.Errorf("config = %s, %v", cfg, err)
	}
}

func TestPullFailuresLeaveNothing(t *testing.T) {
	ref, _, _ := fixture(t)
	other := keystest.EC(t, elliptic.P256())
	wrong, _ := jwe.NewUnwrapper(other)
	for name, tc := range map[string]struct {
		opts []Option
		want error
	}{
		"wrong key": {[]Option{WithKeys(wrong)}, spec.ErrNoKey},
		"no key":    {nil, spec.ErrNoKey},
	} {
		dir := t.TempDir()
		rootfs := filepath.Join(dir, "rootfs")
		err := Pull(context.Background(), ref, rootfs, tc.opts...)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", name, err, tc.want)
		}
		if left, _ := os.ReadDir(dir); len(left) != 0 {
			t.Errorf("%s: left %d entries next to the rootfs", name, len(left))
		}
	}
	existing := t.TempDir()
	if err := Pull(context.Background(), ref, existing); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("existing rootfs: %v", err)
	}
}
