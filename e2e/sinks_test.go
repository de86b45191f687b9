package e2e

import (
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

	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
)

// readLayers returns the layer descriptors of the image at r, whatever its
// transport.
func readLayers(t *testing.T, r string) []v1.Descriptor {
	t.Helper()
	tr, err := transport.Parse(r)
	if err != nil {
		t.Fatal(err)
	}
	a, done, err := transport.Read(t.Context(), tr)
	if err != nil {
		t.Fatalf("reading %s: %v", r, err)
	}
	defer done()
	m, err := a.Image.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	return m.Layers
}

// Every sink × direction: a sink that can carry encrypted layers gets them
// with their keys (they decrypt back to the original); one that cannot
// (docker-archive) refuses with ErrUnsupported and nothing is written.
func TestSinksNeverLie(t *testing.T) {
	t.Parallel()
	k, k2 := newKeys(t), newKeys(t)
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	src := writeLayout(t, ociImage(t, 2), "v1")
	orig := readLayers(t, src)
	enc := ref(filepath.Join(t.TempDir(), "enc"), "v1")
	mustCoffer(t, "encrypt", "--recipient", "jwe:"+k.ecPub, src, enc)

	sinks := []struct {
		name    string
		dst     func(dir, tc string) string
		carries bool
	}{
		{"oci", func(dir, tc string) string { return ref(filepath.Join(dir, "out"), "v1") }, true},
		{"oci-archive", func(dir, tc string) string { return "oci-archive:" + filepath.Join(dir, "out.tar") }, true},
		{"docker", func(dir, tc string) string { return "docker://" + host + "/" + tc + ":v1" }, true},
		{"docker-archive", func(dir, tc string) string { return "docker-archive:" + filepath.Join(dir, "out.tar") }, false},
	}
	directions := []struct {
		name      string
		args      []string
		src       string
		encrypted []bool // per layer, in the output
		key       string // opens the output's encrypted layers
	}{
		{"encrypt", []string{"encrypt", "--recipient", "jwe:" + k.ecPub}, src, []bool{true, true}, k.ecPriv},
		{"add-recipient", []string{"encrypt", "--recipient", "jwe:" + k2.ecPub, "--key", k.ecPriv}, enc, []bool{true, true}, k2.ecPriv},
		{"rekey", []string{"rekey", "--recipient", "jwe:" + k2.ecPub, "--key", k.ecPriv}, enc, []bool{true, true}, k2.ecPriv},
		{"partial-decrypt", []string{"decrypt", "--layer", "0", "--key", k.ecPriv}, enc, []bool{false, true}, k.ecPriv},
		{"decrypt", []string{"decrypt", "--key", k.ecPriv}, enc, []bool{false, false}, ""},
	}
	for _, s := range sinks {
		for _, d := range directions {
			t.Run(s.name+"/"+d.name, func(t *testing.T) {
				dir := t.TempDir()
				dst := s.dst(dir, strings.ReplaceAll(s.name+"-"+d.name, "_", "-"))
				wantRefuse := !s.carries && (d.encrypted[0] || d.encrypted[1])
				_, stderr, err := coffer(t, append(append([]string{}, d.args...), d.src, dst)...)
				if wantRefuse {
					if !errors.Is(err, spec.ErrUnsupported) || !strings.Contains(err.Error(), "cannot carry encrypted layers") {
						t.Fatalf("err = %v, want a refusal (ErrUnsupported)", err)
					}
					if ents, _ := os.ReadDir(dir); len(ents) != 0 {
						t.Errorf("refused sink left %d entries in its directory (%s)", len(ents), ents[0].Name())
					}
					return
				}
				if err != nil {
					t.Fatalf("%v\n%s", err, stderr)
				}
				got := readLayers(t, dst)
				if len(got) != len(orig) {
					t.Fatalf("%d layers, want %d", len(got), len(orig))
				}
				for i, l := range got {
					isEnc := strings.HasSuffix(string(l.MediaType), spec.EncryptedSuffix)
					if isEnc != d.encrypted[i] {
						t.Errorf("layer %d media type %s, want encrypted=%v", i, l.MediaType, d.encrypted[i])
					}
					if hasKeys := l.Annotations["org.opencontainers.image.enc.keys.jwe"] != ""; hasKeys != d.encrypted[i] {
						t.Errorf("layer %d has jwe keys annotation = %v, want %v", i, hasKeys, d.encrypted[i])
					}
					if !isEnc && l.Digest != orig[i].Digest {
						t.Errorf("plain layer %d digest %s, want %s", i, l.Digest, orig[i].Digest)
					}
				}
				if d.key == "" {
					return
				}
				back := ref(filepath.Join(t.TempDir(), "back"), "v1")
				mustCoffer(t, "decrypt", "--key", d.key, dst, back)
				for i, l := range readLayers(t, back) {
					if l.Digest != orig[i].Digest {
						t.Errorf("decrypted layer %d digest %s, want %s", i, l.Digest, orig[i].Digest)
					}
				}
			})
		}
	}
}
