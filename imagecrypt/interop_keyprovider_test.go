package imagecrypt_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/containers/ocicrypt"
	occonfig "github.com/containers/ocicrypt/config"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/coffer-dev/coffer/imagecrypt"
	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/keywrap/aa"
	"github.com/coffer-dev/coffer/keywrap/keyprovider"
)

// ocicrypt reads OCICRYPT_KEYPROVIDER_CONFIG once, at package init, so its
// side runs in a re-executed test binary with the variable set. The "cmd"
// provider it calls is the test binary again, serving coffer's keyprovider
// protocol (keyprovider.ServeCmd + aa.NewHandler).
const (
	argProvider = "coffer-interop-keyprovider"
	argOcicrypt = "coffer-interop-ocicrypt"
	envKEKFile  = "COFFER_INTEROP_KEK_FILE"
	envDir      = "COFFER_INTEROP_DIR"
	interopKID  = "kbs:///default/image_key/interop"
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case argProvider:
			os.Exit(runProvider())
		case argOcicrypt:
			os.Exit(runOcicrypt(os.Args[2]))
		}
	}
	os.Exit(m.Run())
}

func runProvider() int {
	resolve := aa.KeyResolver(func(_ context.Context, kid string) ([]byte, error) {
		if kid != interopKID {
			return nil, fmt.Errorf("unknown kid %q", kid)
		}
		return aa.ReadKEK(os.Getenv(envKEKFile))
	})
	if err := keyprovider.ServeCmd(context.Background(), aa.NewHandler(resolve), os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// runOcicrypt encrypts dir/plain into dir/ct + dir/ann.json, or decrypts
// dir/ct with dir/desc.json into dir/out, through ocicrypt's keyprovider.
func runOcicrypt(op string) int {
	dir := os.Getenv(envDir)
	fail := func(err error) int { fmt.Fprintln(os.Stderr, op+":", err); return 1 }
	switch op {
	case "encrypt":
		plain, err := os.ReadFile(filepath.Join(dir, "plain"))
		if err != nil {
			return fail(err)
		}
		cc, err := occonfig.EncryptWithKeyProvider([][]byte{[]byte("attestation-agent:keypath=" + os.Getenv(envKEKFile) + "::keyid=" + interopKID + "::algorithm=A256GCM")})
		if err != nil {
			return fail(err)
		}
		desc := ocispec.Descriptor{MediaType: string(types.OCILayer), Digest: digest.FromBytes(plain), Size: int64(len(plain))}
		r, fin, err := ocicrypt.EncryptLayer(cc.EncryptConfig, bytes.NewReader(plain), desc)
		if err != nil {
			return fail(err)
		}
		ct, err := io.ReadAll(r)
		if err != nil {
			return fail(err)
		}
		ann, err := fin()
		if err != nil {
			return fail(err)
		}
		aj, _ := json.Marshal(ann)
		if err := os.WriteFile(filepath.Join(dir, "ct"), ct, 0o600); err != nil {
			return fail(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "ann.json"), aj, 0o600); err != nil {
			return fail(err)
		}
	case "decrypt":
		ct, err := os.ReadFile(filepath.Join(dir, "ct"))
		if err != nil {
			return fail(err)
		}
		dj, err := os.ReadFile(filepath.Join(dir, "desc.json"))
		if err != nil {
			return fail(err)
		}
		var desc ocispec.Descriptor
		if err := json.Unmarshal(dj, &desc); err != nil {
			return fail(err)
		}
		cc, err := occonfig.DecryptWithKeyProvider([][]byte{[]byte("attestation-agent")})
		if err != nil {
			return fail(err)
		}
		r, _, err := ocicrypt.DecryptLayer(cc.DecryptConfig, bytes.NewReader(ct), desc, false)
		if err != nil {
			return fail(err)
		}
		out, err := io.ReadAll(r)
		if err != nil {
			return fail(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "out"), out, 0o600); err != nil {
			return fail(err)
		}
	default:
		return fail(fmt.Errorf("unknown op"))
	}
	return 0
}

// kpSetup writes a KEK file and a keyprovider config naming the test binary.
func kpSetup(t *testing.T) (dir string, kek []byte, env []string) {
	t.Helper()
	dir = t.TempDir()
	kek = make([]byte, 32)
	rand.Read(kek)
	kekFile := filepath.Join(dir, "kek")
	if err := os.WriteFile(kekFile, kek, 0o600); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := json.Marshal(map[string]any{"key-providers": map[string]any{
		"attestation-agent": map[string]any{"cmd": map[string]any{"path": self, "args": []string{argProvider}}}}})
	cfgFile := filepath.Join(dir, "ocicrypt.json")
	if err := os.WriteFile(cfgFile, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	env = append(os.Environ(), "OCICRYPT_KEYPROVIDER_CONFIG="+cfgFile, envKEKFile+"="+kekFile, envDir+"="+dir)
	return dir, kek, env
}

func runChild(t *testing.T, env []string, op string) {
	t.Helper()
	self, _ := os.Executable()
	cmd := exec.Command(self, argOcicrypt, op)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ocicrypt child %s: %v\n%s", op, err, out)
	}
}

// ocicrypt, calling coffer's keyprovider server, encrypts a layer; coffer's
// aa.NewUnwrapper decrypts the image built from it.
func TestInteropKeyproviderOcicryptToCoffer(t *testing.T) {
	dir, kek, env := kpSetup(t)
	plain := make([]byte, 20000)
	rand.Read(plain)
	if err := os.WriteFile(filepath.Join(dir, "plain"), plain, 0o600); err != nil {
		t.Fatal(err)
	}
	runChild(t, env, "encrypt")
	ct, _ := os.ReadFile(filepath.Join(dir, "ct"))
	aj, _ := os.ReadFile(filepath.Join(dir, "ann.json"))
	var ann map[string]string
	if err := json.Unmarshal(aj, &ann); err != nil {
		t.Fatal(err)
	}
	if ann["org.opencontainers.image.enc.keys.provider.attestation-agent"] == "" {
		t.Fatalf("no provider.attestation-agent entry: %v", ann)
	}
	img, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1),
		mutate.Addendum{Layer: static.NewLayer(ct, types.OCILayer+"+encrypted"), Annotations: ann, MediaType: types.OCILayer + "+encrypted"})
	if err != nil {
		t.Fatal(err)
	}
	u := aa.NewUnwrapper(aa.KeyResolver(func(_ context.Context, kid string) ([]byte, error) {
		if kid != interopKID {
			return nil, fmt.Errorf("kid %q", kid)
		}
		return kek, nil
	}))
	res, err := imagecrypt.Decrypt(context.Background(), imagecrypt.Artifact{Image: img}, imagecrypt.WithKeys(u))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	m, _ := res.Image.Manifest()
	d := m.Layers[0]
	l, _ := res.Image.LayerByDigest(d.Digest)
	if got, want := blob(t, l), plain; d.Digest.String() != digest.FromBytes(want).String() || !bytes.Equal(got, want) {
		t.Errorf("got %s (%s), want %s", d.Digest, digest.FromBytes(got), digest.FromBytes(want))
	}
}

// coffer encrypts with aa.NewWrapper; ocicrypt, calling coffer's keyprovider
// server, decrypts the layer.
func TestInteropKeyproviderCofferToOcicrypt(t *testing.T) {
	dir, kek, env := kpSetup(t)
	w, err := aa.NewWrapper(kek, interopKID)
	if err != nil {
		t.Fatal(err)
	}
	l, _ := random.Layer(16384, types.OCILayer)
	orig := blob(t, l)
	img, _ := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), l)
	res, err := imagecrypt.Encrypt(context.Background(), imagecrypt.Artifact{Image: img}, []keywrap.Wrapper{w})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	m, _ := res.Image.Manifest()
	d := m.Layers[0]
	el, _ := res.Image.LayerByDigest(d.Digest)
	dj, _ := json.Marshal(toOCI(d))
	if err := os.WriteFile(filepath.Join(dir, "ct"), blob(t, el), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "desc.json"), dj, 0o600); err != nil {
		t.Fatal(err)
	}
	runChild(t, env, "decrypt")
	got, err := os.ReadFile(filepath.Join(dir, "out"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, orig) {
		t.Errorf("got %s, want %s", digest.FromBytes(got), digest.FromBytes(orig))
	}
}
