package transport

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/internal/testutil"
	"github.com/coffer-dev/coffer/spec"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in, transport, str, err string
	}{
		{in: "oci:/tmp/x", transport: "oci", str: "oci:/tmp/x"},
		{in: "oci:/tmp/x:v1", transport: "oci", str: "oci:/tmp/x:v1"},
		{in: "oci:rel/dir:tag", transport: "oci", str: "oci:rel/dir:tag"},
		{in: "oci-archive:/a.tar:t", transport: "oci-archive", str: "oci-archive:/a.tar:t"},
		{in: "docker-archive:/a.tar", transport: "docker-archive", str: "docker-archive:/a.tar"},
		{in: "docker-archive:/a.tar:app:v2", transport: "docker-archive", str: "docker-archive:/a.tar:app:v2"},
		{in: "docker://127.0.0.1:5000/app:enc", transport: "docker", str: "docker://127.0.0.1:5000/app:enc"},
		{in: "docker://reg.example/app@sha256:" + strings.Repeat("a", 64), transport: "docker"},
		{in: "oci:/tmp/x@sha256:" + strings.Repeat("b", 64), transport: "oci", str: "oci:/tmp/x@sha256:" + strings.Repeat("b", 64)},
		{in: "oci-archive:a.tar@sha256:" + strings.Repeat("c", 64), transport: "oci-archive", str: "oci-archive:a.tar@sha256:" + strings.Repeat("c", 64)},
		{in: "oci:/tmp/x@sha256:abc", err: "@sha256:<64 hex>"},
		{in: "oci:@sha256:" + strings.Repeat("b", 64), err: "@sha256:<64 hex>"},
		{in: "docker:reg/app", err: "docker://HOST/REPO"},
		{in: "/tmp/x", err: "has no transport"},
		{in: "ftp:/x", err: "unknown transport"},
		{in: "oci:", err: "empty path"},
		{in: "oci:/x:", err: "empty tag"},
		{in: "docker://UPPER/Case:tag", err: "image reference"},
	} {
		r, err := Parse(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Parse(%q) err = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if r.Transport() != tc.transport || (tc.str != "" && r.String() != tc.str) {
			t.Errorf("Parse(%q) = %s %s, want %s %s", tc.in, r.Transport(), r, tc.transport, tc.str)
		}
	}
	for _, tc := range []struct {
		in   string
		want string
	}{
		{"oci:/x@sha256:" + strings.Repeat("b", 64), "sha256:" + strings.Repeat("b", 64)},
		{"docker://reg.example/app@sha256:" + strings.Repeat("a", 64), "sha256:" + strings.Repeat("a", 64)},
		{"docker://reg.example/app:v1", ""},
		{"oci:/x:v1", ""},
	} {
		r, err := Parse(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		h, ok := NamedDigest(r)
		if got := h.String(); (tc.want == "") == ok || (ok && got != tc.want) {
			t.Errorf("NamedDigest(%q) = %s %v, want %q", tc.in, got, ok, tc.want)
		}
	}
	if _, err := Parse("nfs:/x"); !errors.Is(err, spec.ErrUnsupported) {
		t.Errorf("unknown transport err = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"oci:/x:v1", "docker://h:1/r@sha256:00", "oci-archive:a:b", "docker-archive:x:y:z", ":"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fuzzbound.Limit(t, fuzzbound.Default)
		r, err := Parse(s)
		if err != nil {
			return
		}
		if _, err := Parse(r.String()); err != nil {
			t.Fatalf("Parse(%q) ok but its String %q does not parse: %v", s, r.String(), err)
		}
	})
}

func mustParse(t *testing.T, s string) Reference {
	t.Helper()
	r, err := Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func digest(t *testing.T, a Artifact) v1.Hash {
	t.Helper()
	var d v1.Hash
	var err error
	if a.Image != nil {
		d, err = a.Image.Digest()
	} else {
		d, err = a.Index.Digest()
	}
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func roundTrip(t *testing.T, ref string, a Artifact) {
	t.Helper()
	ctx := context.Background()
	r := mustParse(t, ref)
	if err := Write(ctx, r, a); err != nil {
		t.Fatalf("Write %s: %v", ref, err)
	}
	got, closeFn, err := Read(ctx, r)
	if err != nil {
		t.Fatalf("Read %s: %v", ref, err)
	}
	defer closeFn()
	if digest(t, got) != digest(t, a) {
		t.Errorf("%s: read back digest %s, want %s", ref, digest(t, got), digest(t, a))
	}
}

func TestLocalRoundTrips(t *testing.T) {
	img, _ := random.Image(1024, 2)
	idx, _ := random.Index(512, 1, 2)
	dir := t.TempDir()
	roundTrip(t, "oci:"+filepath.Join(dir, "lay")+":v1", Artifact{Image: img})
	roundTrip(t, "oci:"+filepath.Join(dir, "lay")+":idx", Artifact{Index: idx})
	roundTrip(t, "oci-archive:"+filepath.Join(dir, "a.tar")+":v1", Artifact{Image: img})
	roundTrip(t, "oci-archive:"+filepath.Join(dir, "i.tar"), Artifact{Index: idx})
	roundTrip(t, "docker-archive:"+filepath.Join(dir, "d.tar"), Artifact{Image: img})
	if err := Write(context.Background(), mustParse(t, "docker-archive:"+filepath.Join(dir, "x.tar")), Artifact{Index: idx}); !errors.Is(err, spec.ErrUnsupported) {
		t.Errorf("index to docker-archive: err = %v", err)
	}
}

func TestOCITagReplaced(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "lay")
	a, _ := random.Image(100, 1)
	b, _ := random.Image(100, 1)
	for _, img := range []v1.Image{a, b} {
		if err := Write(ctx, mustParse(t, "oci:"+dir+":v1"), Artifact{Image: img}); err != nil {
			t.Fatal(err)
		}
	}
	if err := Write(ctx, mustParse(t, "oci:"+dir+":other"), Artifact{Image: a}); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "index.json"))
	if n := strings.Count(string(raw), `"org.opencontainers.image.ref.name":"v1"`); n != 1 {
		t.Errorf("index.json has %d v1 entries, want 1: %s", n, raw)
	}
	got, _, err := Read(ctx, mustParse(t, "oci:"+dir+":v1"))
	if err != nil || digest(t, got) != digest(t, Artifact{Image: b}) {
		t.Errorf("v1 does not name the newer image: %v", err)
	}
	if _, _, err := Read(ctx, mustParse(t, "oci:"+dir)); err == nil || !strings.Contains(err.Error(), "tags: ") {
		t.Errorf("untagged read of a multi-image layout: %v", err)
	}
	if _, _, err := Read(ctx, mustParse(t, "oci:"+dir+":nope")); !errors.Is(err, spec.ErrNotFound) {
		t.Errorf("missing tag: %v", err)
	}
	da := digest(t, Artifact{Image: a})
	got, _, err = Read(ctx, mustParse(t, "oci:"+dir+"@"+da.String()))
	if err != nil || digest(t, got) != da {
		t.Errorf("read by digest %s: %v", da, err)
	}
	missing := "oci:" + dir + "@sha256:" + strings.Repeat("0", 64)
	if _, _, err := Read(ctx, mustParse(t, missing)); !errors.Is(err, spec.ErrNotFound) {
		t.Errorf("missing digest: %v", err)
	}
	if err := Write(ctx, mustParse(t, "oci:"+dir+"@"+da.String()), Artifact{Image: a}); !errors.Is(err, spec.ErrUnsupported) {
		t.Errorf("write to a digest reference: err = %v, want ErrUnsupported", err)
	}
}

// failingLayer errors at the end of its stream, as a layer that fails
// verification does.
type failingLayer struct{ v1.Layer }

func (f failingLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(io.MultiReader(strings.NewReader("partial data"), errReader{})), nil
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("integrity check failed") }

type failingImage struct{ v1.Image }

func (f failingImage) Layers() ([]v1.Layer, error) {
	ls, err := f.Image.Layers()
	for i := range ls {
		ls[i] = failingLayer{ls[i]}
	}
	return ls, err
}

func (f failingImage) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	l, err := f.Image.LayerByDigest(h)
	return failingLayer{l}, err
}

func TestFailedWriteLeavesLayoutUnchanged(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "lay")
	good, _ := random.Image(100, 1)
	if err := Write(ctx, mustParse(t, "oci:"+dir+":v1"), Artifact{Image: good}); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(dir, "index.json"))
	blobsBefore, _ := filepath.Glob(filepath.Join(dir, "blobs", "sha256", "*"))
	bad, _ := random.Image(100, 2)
	if err := Write(ctx, mustParse(t, "oci:"+dir+":v2"), Artifact{Image: failingImage{bad}}); err == nil {
		t.Fatal("write of a failing image succeeded")
	}
	after, _ := os.ReadFile(filepath.Join(dir, "index.json"))
	blobsAfter, _ := filepath.Glob(filepath.Join(dir, "blobs", "sha256", "*"))
	if string(before) != string(after) {
		t.Errorf("index.json changed by a failed write")
	}
	if len(blobsAfter) != len(blobsBefore) {
		t.Errorf("blobs: %d before, %d after a failed write", len(blobsBefore), len(blobsAfter))
	}
	// A new layout is not created at all.
	fresh := filepath.Join(t.TempDir(), "fresh")
	if err := Write(ctx, mustParse(t, "oci:"+fresh+":v1"), Artifact{Image: failingImage{bad}}); err == nil {
		t.Fatal("write succeeded")
	}
	if _, err := os.Stat(fresh); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed write left %s behind", fresh)
	}
	arch := filepath.Join(t.TempDir(), "a.tar")
	if err := Write(ctx, mustParse(t, "oci-archive:"+arch), Artifact{Image: failingImage{bad}}); err == nil {
		t.Fatal("archive write succeeded")
	}
	if left, _ := os.ReadDir(filepath.Dir(arch)); len(left) != 0 {
		t.Errorf("failed archive write left %d entries", len(left))
	}
}

func TestRegistryRoundTrip(t *testing.T) {
	srv := httptest.NewServer(registry.New())
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	img, _ := random.Image(2048, 2)
	idx, _ := random.Index(512, 1, 2)
	roundTrip(t, "docker://"+host+"/app:v1", Artifact{Image: img})
	roundTrip(t, "docker://"+host+"/app:multi", Artifact{Index: idx})
	_, _, err := Read(context.Background(), mustParse(t, "docker://"+host+"/app:missing"))
	if !errors.Is(err, spec.ErrNotFound) {
		t.Errorf("missing tag: %v", err)
	}
}

func TestRegistryGoneMidPush(t *testing.T) {
	srv := httptest.NewServer(registry.New())
	host := strings.TrimPrefix(srv.URL, "http://")
	srv.Close()
	img, _ := random.Image(1024, 1)
	err := Write(context.Background(), mustParse(t, "docker://"+host+"/app:v1"), Artifact{Image: img})
	if err == nil || !strings.Contains(err.Error(), "unreachable") || strings.Contains(err.Error(), "\n") {
		t.Errorf("push to a dead registry: %v", err)
	}
}

func TestDebianDockerRegistry(t *testing.T) {
	addr := testutil.StartDockerRegistry(t)
	img, _ := random.Image(4096, 3)
	idx, _ := random.Index(512, 2, 2)
	roundTrip(t, "docker://"+addr+"/coffer/app:v1", Artifact{Image: img})
	roundTrip(t, "docker://"+addr+"/coffer/app:multi", Artifact{Index: idx})
}

// FuzzExtractTar feeds arbitrary archives to the oci-archive extractor: it
// must fail or stay inside its directory.
func FuzzExtractTar(f *testing.F) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Name: "index.json", Mode: 0o644, Size: 2, Typeflag: tar.TypeReg})
	tw.Write([]byte("{}"))
	tw.WriteHeader(&tar.Header{Name: "../escape", Mode: 0o644, Size: 1, Typeflag: tar.TypeReg})
	tw.Write([]byte("x"))
	tw.Close()
	f.Add(b.Bytes())
	base := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		parent, err := os.MkdirTemp(base, "p")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(parent)
		dir := filepath.Join(parent, "x")
		os.Mkdir(dir, 0o755)
		_ = extractTar(context.Background(), bytes.NewReader(data), dir, int64(len(data)))
		entries, _ := os.ReadDir(parent)
		if len(entries) != 1 {
			t.Fatalf("extraction wrote outside its directory: %d entries in the parent", len(entries))
		}
	})
}

// slowLayer streams its compressed bytes in small pieces and says when the
// upload began, so a test can kill the registry mid-upload.
type slowLayer struct {
	v1.Layer
	started chan struct{}
}

func (s slowLayer) Compressed() (io.ReadCloser, error) {
	rc, err := s.Layer.Compressed()
	if err != nil {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{&slowReader{r: rc, started: s.started}, rc}, nil
}

type slowReader struct {
	r       io.Reader
	started chan struct{}
	once    sync.Once
}

func (s *slowReader) Read(p []byte) (int, error) {
	s.once.Do(func() { close(s.started) })
	time.Sleep(5 * time.Millisecond)
	if len(p) > 512 {
		p = p[:512]
	}
	return s.r.Read(p)
}

func TestRegistryKilledMidPush(t *testing.T) {
	srv := httptest.NewServer(registry.New())
	host := strings.TrimPrefix(srv.URL, "http://")
	base, _ := random.Image(1<<20, 1)
	l := (mustLayers(t, base))[0]
	started := make(chan struct{})
	img, err := mutate.AppendLayers(empty.Image, slowLayer{l, started})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		<-started
		srv.CloseClientConnections()
		srv.Close()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = Write(ctx, mustParse(t, "docker://"+host+"/app:v1"), Artifact{Image: img}, WithJobs(1))
	if err == nil {
		t.Fatal("push succeeded although the registry died mid-upload")
	}
	if strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "pushing to docker://"+host+"/app:v1") {
		t.Errorf("error is not one actionable line: %q", err)
	}
}

func mustLayers(t *testing.T, img v1.Image) []v1.Layer {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

// fileLayer offers its blob as a caller-owned file (the BlobFile hook).
type fileLayer struct {
	v1.Layer
	path string
}

func (f fileLayer) BlobFile() (string, bool) { return f.path, true }

func TestBlobFileHardLinked(t *testing.T) {
	base, _ := random.Image(4096, 1)
	l := mustLayers(t, base)[0]
	rc, _ := l.Compressed()
	data, _ := io.ReadAll(rc)
	staged := filepath.Join(t.TempDir(), "staged")
	if err := os.WriteFile(staged, data, 0o600); err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, fileLayer{l, staged})
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"oci:" + filepath.Join(t.TempDir(), "lay") + ":v1"} {
		if err := Write(context.Background(), mustParse(t, ref), Artifact{Image: img}); err != nil {
			t.Fatal(err)
		}
		d, _ := l.Digest()
		blob := filepath.Join(strings.TrimSuffix(strings.TrimPrefix(ref, "oci:"), ":v1"), "blobs", "sha256", d.Hex)
		a, _ := os.Stat(staged)
		b, err := os.Stat(blob)
		if err != nil {
			t.Fatal(err)
		}
		if !os.SameFile(a, b) {
			t.Errorf("blob %s is a copy, want a hard link to the staged file", d.Hex)
		}
		got, _, err := Read(context.Background(), mustParse(t, ref))
		if err != nil || digest(t, got) != digest(t, Artifact{Image: img}) {
			t.Errorf("read back: %v", err)
		}
	}
}

func TestRegistryUnauthorized(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	img, _ := random.Image(100, 1)
	err := Write(context.Background(), mustParse(t, "docker://"+host+"/app:v1"), Artifact{Image: img}, WithCreds("u:wrong"))
	if !errors.Is(err, spec.ErrUnauthorized) || !strings.Contains(err.Error(), "check --creds or docker login") || strings.Contains(err.Error(), "\n") {
		t.Errorf("push with bad creds: %v", err)
	}
	_, _, err = Read(context.Background(), mustParse(t, "docker://"+host+"/app:v1"), WithCreds("u:wrong"))
	if !errors.Is(err, spec.ErrUnauthorized) {
		t.Errorf("pull with bad creds: %v", err)
	}
}

// An oci-archive whose entries climb out of the archive is refused as an
// integrity failure (exit 4) before anything is read from it, not merely
// contained by os.Root.
func TestArchiveEscapeIsIntegrityError(t *testing.T) {
	for _, name := range []string{"../escape", "blobs/../../escape", "/abs/escape"} {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		tw.WriteHeader(&tar.Header{Name: "oci-layout", Mode: 0o644, Size: 2, Typeflag: tar.TypeReg})
		tw.Write([]byte("{}"))
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: 1, Typeflag: tar.TypeReg})
		tw.Write([]byte("x"))
		tw.Close()
		file := filepath.Join(t.TempDir(), "app.tar")
		if err := os.WriteFile(file, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		_, _, err := Read(context.Background(), mustParse(t, "oci-archive:"+file))
		if !errors.Is(err, spec.ErrIntegrity) || !strings.Contains(err.Error(), "escapes the archive") {
			t.Errorf("entry %q: %v, want spec.ErrIntegrity naming the escape", name, err)
		}
	}
}

// Write itself (not only the CLI) refuses an encrypted image for a sink that
// cannot carry it, before creating anything; carriers accept it.
func TestWriteRefusesEncryptedWhereItCannotCarry(t *testing.T) {
	t.Parallel()
	plain, err := random.Layer(512, "application/vnd.oci.image.layer.v1.tar")
	if err != nil {
		t.Fatal(err)
	}
	encl, err := random.Layer(512, "application/vnd.oci.image.layer.v1.tar+gzip+encrypted")
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, plain, encl)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ref     string
		carries bool
	}{
		{"oci:%s/lay:v1", true},
		{"oci-archive:%s/a.tar", true},
		{"docker-archive:%s/d.tar", false},
	} {
		dir := t.TempDir()
		r := mustParse(t, strings.ReplaceAll(tc.ref, "%s", dir))
		if got := r.CarriesEncryption(); got != tc.carries {
			t.Errorf("%s: CarriesEncryption() = %v, want %v", r, got, tc.carries)
		}
		err := Write(context.Background(), r, Artifact{Image: img})
		if tc.carries {
			if err != nil {
				t.Errorf("%s: %v", r, err)
			}
			continue
		}
		if !errors.Is(err, spec.ErrUnsupported) {
			t.Errorf("%s: err = %v, want ErrUnsupported", r, err)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("%s: refused write left %s", r, ents[0].Name())
		}
	}
}

func TestUnverifiedBlobs(t *testing.T) {
	srv := httptest.NewServer(registry.New())
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	img, _ := random.Image(4096, 1)
	ref := mustParse(t, "docker://"+host+"/app:v1")
	if err := Write(context.Background(), ref, Artifact{Image: img}); err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	h, _ := layers[0].Digest()
	rc, _ := layers[0].Compressed()
	want, _ := io.ReadAll(rc)
	get, err := UnverifiedBlobs(ref)
	if err != nil || get == nil {
		t.Fatalf("UnverifiedBlobs(docker) = %v, %v", get, err)
	}
	body, err := get(context.Background(), h)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(body)
	body.Close()
	if !bytes.Equal(got, want) {
		t.Errorf("blob: got %d bytes, want the %d pushed", len(got), len(want))
	}
	missing := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("0", 64)}
	if _, err := get(context.Background(), missing); !errors.Is(err, spec.ErrNotFound) {
		t.Errorf("missing blob: %v, want ErrNotFound", err)
	}
	if get, err := UnverifiedBlobs(mustParse(t, "oci:"+t.TempDir())); get != nil || err != nil {
		t.Errorf("UnverifiedBlobs(oci) = %v, %v; want nil, nil (local blobs gain nothing)", get != nil, err)
	}
	// Unauthorized registries map to ErrUnauthorized here too.
	deny := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
	}))
	defer deny.Close()
	get, _ = UnverifiedBlobs(mustParse(t, "docker://"+strings.TrimPrefix(deny.URL, "http://")+"/app:v1"), WithCreds("u:wrong"))
	if _, err := get(context.Background(), h); !errors.Is(err, spec.ErrUnauthorized) {
		t.Errorf("unauthorized: %v, want ErrUnauthorized", err)
	}
}

// TestLayoutManifestWithoutMediaType copies an image whose manifest has
// no mediaType field (optional in the OCI image spec; umoci writes it
// so) from one layout to another: the new index entry names the OCI
// manifest type, so the copy reads back.
func TestLayoutManifestWithoutMediaType(t *testing.T) {
	src := t.TempDir()
	blob := func(b []byte) string {
		sum := sha256.Sum256(b)
		h := hex.EncodeToString(sum[:])
		os.MkdirAll(filepath.Join(src, "blobs", "sha256"), 0o755)
		if err := os.WriteFile(filepath.Join(src, "blobs", "sha256", h), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return "sha256:" + h
	}
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	man := []byte(fmt.Sprintf(`{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},"layers":[]}`, blob(cfg), len(cfg)))
	md := blob(man)
	os.WriteFile(filepath.Join(src, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
	os.WriteFile(filepath.Join(src, "index.json"), []byte(fmt.Sprintf(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"size":%d,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}`, md, len(man))), 0o644)
	ctx := t.Context()
	from, err := Parse("oci:" + src + ":v1")
	if err != nil {
		t.Fatal(err)
	}
	a, closeFn, err := Read(ctx, from)
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	dst := filepath.Join(t.TempDir(), "copy")
	to, _ := Parse("oci:" + dst + ":v1")
	if err := Write(ctx, to, a); err != nil {
		t.Fatal(err)
	}
	back, closeBack, err := Read(ctx, to)
	if err != nil {
		t.Fatalf("reading the copy back: %v", err)
	}
	defer closeBack()
	if back.Image == nil {
		t.Fatal("the copy is not an image")
	}
	if d, _ := back.Image.Digest(); d.String() != md {
		t.Fatalf("copy's manifest %s, want the source's %s (unchanged bytes)", d, md)
	}
}
