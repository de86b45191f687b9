package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containers/ocicrypt"
	occonfig "github.com/containers/ocicrypt/config"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/coffer-dev/coffer/internal/cli"
	"github.com/coffer-dev/coffer/kbs/store/postgres/pgtest"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/tpm/tpmtest"
)

// argCLI makes the test binary run the coffer CLI (skopeo's "cmd"
// keyprovider needs an executable).
const (
	argCLI             = "coffer-e2e-cli"
	argOcicryptEncrypt = "coffer-e2e-ocicrypt-encrypt"
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == argCLI {
		root := cli.NewRoot()
		root.SetArgs(os.Args[2:])
		if err := root.ExecuteContext(context.Background()); err != nil {
			fmt.Fprintln(os.Stderr, "coffer:", cli.Explain(err))
			os.Exit(cli.ExitCode(err)) // as cmd/coffer does
		}
		os.Exit(0)
	}
	if len(os.Args) > 4 && os.Args[1] == argOcicryptEncrypt {
		if err := ocicryptEncrypt(os.Args[2], os.Args[3], os.Args[4]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(pgtest.Main(m, &pg)) // stops the PostgreSQL server of replicas_test.go if a test started it
}

// ocicryptEncrypt encrypts the file in with ocicrypt and the keyprovider
// parameters skopeo derives from --encryption-key provider:isecl:any,
// writing the ciphertext and the layer annotations.
func ocicryptEncrypt(in, ctFile, annFile string) error {
	plain, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	cc, err := occonfig.EncryptWithKeyProvider([][]byte{[]byte("isecl:any")})
	if err != nil {
		return err
	}
	desc := ocispec.Descriptor{MediaType: string(types.OCILayer), Digest: digest.FromBytes(plain), Size: int64(len(plain))}
	r, fin, err := ocicrypt.EncryptLayer(cc.EncryptConfig, bytes.NewReader(plain), desc)
	if err != nil {
		return err
	}
	ct, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ann, err := fin()
	if err != nil {
		return err
	}
	aj, _ := json.Marshal(ann)
	if err := os.WriteFile(ctFile, ct, 0o600); err != nil {
		return err
	}
	return os.WriteFile(annFile, aj, 0o600)
}

// firstLayer returns the first layer blob of the image tag in layout dir.
func firstLayer(t *testing.T, dir, tag string) []byte {
	t.Helper()
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil || len(im.Manifests) == 0 {
		t.Fatalf("layout %s: %v", dir, err)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := img.Layers()
	if err != nil || len(ls) == 0 {
		t.Fatalf("layers: %v", err)
	}
	rc, err := ls[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func startWLAKeyprovider(t *testing.T, wls, tpmAddr, brokerPub string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "kp.sock")
	addr := "unix://" + sock
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		root := cli.NewRoot()
		root.SetArgs([]string{"wla", "keyprovider", "--wls", wls, "--tpm", tpmAddr, "--listen", addr, "--broker-key", brokerPub, "--insecure-loopback-http"})
		done <- root.ExecuteContext(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("wla keyprovider: %v", err)
		}
	})
	for i := 0; ; i++ {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if i == 200 {
			t.Fatalf("wla keyprovider: nothing listening on %s", sock)
		}
		time.Sleep(25 * time.Millisecond)
	}
	return addr
}

// Container images the SecL way: SecL's skopeo recipe (ocicrypt's keyprovider
// with provider:isecl:any, coffer wpm get-ocicrypt-wrappedkey as the cmd
// provider) and coffer wpm create-container-image-flavor both
// produce images that host A's keyprovider (coffer wla keyprovider: WLS →
// broker → TPM) decrypts; host B's is refused.
func TestSecLContainerImages(t *testing.T) {
	hostA, hostB := tpmtest.StartSwtpm(t), tpmtest.StartSwtpm(t)
	boot := pcrExtend(t, hostA, 11, "host A boot")
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	mustCoffer(t, "kbs", "keygen-admin", "--out", p("kbs-admin.key"))
	mustCoffer(t, "kbs", "keygen-admin", "--out", p("wls-admin.key"))
	tokenKey, brokerPub := brokerTokenKey(t, dir)
	kbs := startBroker(t, p("kbs-admin.key.pub"), "--token-key", tokenKey)
	adm := []string{"--url", kbs, "--admin-key", p("kbs-admin.key")}
	mustCoffer(t, append([]string{"kbs", "set-resource-policy", "--affirming"}, adm...)...)
	ak := strings.TrimSpace(mustCoffer(t, "tpm", "ak-public", "--tpm", hostA.Addr))
	mustCoffer(t, append([]string{"kbs", "set-reference-value", "tpm_ak_public", ak}, adm...)...)
	mustCoffer(t, append([]string{"kbs", "set-reference-value", "tpm_pcr11", extended(boot)}, adm...)...)
	signer, cert := flavorSigner(t, dir)

	src := writeLayout(t, ociImage(t, 2), "v1")
	// 1. coffer's own container flavor
	fid := strings.TrimSpace(mustCoffer(t, "wpm", "create-container-image-flavor", "-l", "app", "-i", src, "-e", "oci:"+p("enc")+":v1",
		"-o", p("flavor.json"), "--kbs", kbs, "--admin-key", p("kbs-admin.key"), "--signing-key", signer))
	wls := startWLS(t, cert, p("wls-admin.key.pub"), p("wls-db"))
	mustCoffer(t, "wls", "add-flavor", "--url", wls, "--admin-key", p("wls-admin.key"), p("flavor.json"))
	mustCoffer(t, "wls", "add-image", "--url", wls, "--admin-key", p("wls-admin.key"), "--image-id", "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d", "--flavor-id", fid)

	// 2. SecL's skopeo recipe: --encryption-key provider:isecl:any with coffer
	// as the cmd keyprovider. Debian's skopeo 1.9.3 links an ocicrypt without
	// keyprovider support ("Provided protocol not recognized"), so a child
	// process runs the code newer skopeo links: ocicrypt v1.3.2's
	// EncryptLayer with the parameters skopeo passes for provider:isecl:any.
	self, _ := os.Executable()
	cfg, _ := json.Marshal(map[string]any{"key-providers": map[string]any{"isecl": map[string]any{"cmd": map[string]any{
		"path": self, "args": []string{argCLI, "wpm", "get-ocicrypt-wrappedkey", "--kbs", kbs, "--admin-key", p("kbs-admin.key")}}}}})
	os.WriteFile(p("ocicrypt-wpm.json"), cfg, 0o600)
	plain := make([]byte, 50000)
	rand.Read(plain)
	os.WriteFile(p("plain"), plain, 0o600)
	child := exec.CommandContext(t.Context(), self, argOcicryptEncrypt, p("plain"), p("ct"), p("ann.json"))
	child.Env = append(os.Environ(), "OCICRYPT_KEYPROVIDER_CONFIG="+p("ocicrypt-wpm.json"))
	if out, err := child.CombinedOutput(); err != nil {
		t.Fatalf("ocicrypt EncryptLayer with provider:isecl:any: %v\n%s", err, out)
	}
	ct, _ := os.ReadFile(p("ct"))
	var ann map[string]string
	aj, _ := os.ReadFile(p("ann.json"))
	if err := json.Unmarshal(aj, &ann); err != nil || ann["org.opencontainers.image.enc.keys.provider.isecl"] == "" {
		t.Fatalf("ocicrypt wrote no provider.isecl key annotation: %s", aj)
	}
	ociImg, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1),
		mutate.Addendum{Layer: static.NewLayer(ct, types.OCILayer+"+encrypted"), Annotations: ann, MediaType: types.OCILayer + "+encrypted"})
	if err != nil {
		t.Fatal(err)
	}
	ocicryptEnc := writeLayout(t, ociImg, "v1")

	// host side: a keyprovider per host, coffer decrypt through it
	// one keyprovider per host: it holds the host's TPM (swtpm serves one client)
	kps := map[string]string{hostA.Addr: startWLAKeyprovider(t, wls, hostA.Addr, brokerPub), hostB.Addr: startWLAKeyprovider(t, wls, hostB.Addr, brokerPub)}
	decrypt := func(tpmAddr, enc, out string) error {
		kp := kps[tpmAddr]
		hcfg, _ := json.Marshal(map[string]any{"key-providers": map[string]any{"isecl": map[string]any{"grpc": kp}}})
		os.WriteFile(p("ocicrypt-host.json"), hcfg, 0o600)
		t.Setenv("OCICRYPT_KEYPROVIDER_CONFIG", p("ocicrypt-host.json"))
		_, stderr, err := coffer(t, "decrypt", "--key", "provider:isecl", enc, out)
		if err != nil {
			t.Logf("decrypt %s on %s: %v %s", enc, tpmAddr, err, stderr)
		}
		return err
	}
	out := "oci:" + p("dec") + ":v1"
	if err := decrypt(hostA.Addr, "oci:"+p("enc")+":v1", out); err != nil {
		t.Fatalf("host A: %v", err)
	}
	if got, want := layoutDigest(t, out), layoutDigest(t, src); got != want {
		t.Errorf("host A decrypted coffer's image to manifest %s, want the original %s", got, want)
	}
	out2 := "oci:" + p("dec-ocicrypt") + ":v1"
	if err := decrypt(hostA.Addr, ocicryptEnc, out2); err != nil {
		t.Fatalf("host A, ocicrypt's image: %v", err)
	}
	if got := firstLayer(t, p("dec-ocicrypt"), "v1"); !bytes.Equal(got, plain) {
		t.Error("host A's decrypted ocicrypt layer differs from the original")
	}
	bout := "oci:" + p("dec-b") + ":v1"
	if err := decrypt(hostB.Addr, "oci:"+p("enc")+":v1", bout); !errors.Is(err, spec.ErrNoKey) && !errors.Is(err, spec.ErrPolicyDenied) {
		t.Errorf("host B: err = %v, want a refusal", err)
	}
	if _, err := os.Stat(p("dec-b")); !errors.Is(err, os.ErrNotExist) {
		t.Error("host B's refused decrypt wrote an image")
	}
}
