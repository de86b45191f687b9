package imagepolicy

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/resource"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
)

func TestIdentity(t *testing.T) {
	t.Parallel()
	h := "sha256:" + strings.Repeat("a", 64)
	for _, tc := range []struct{ ref, want string }{
		{"docker://127.0.0.1:5000/app:enc", "docker://127.0.0.1:5000/app:enc"},
		{"docker://alpine", "docker://index.docker.io/library/alpine:latest"},
		{"docker://reg.example/app@" + h, ""},
		{"oci:/tmp/app:v1", "oci:/tmp/app:v1"},
		{"oci:/tmp/app@" + h, ""},
	} {
		r, err := transport.Parse(tc.ref)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := Identity(r)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("Identity(%s) = %q %v, want %q", tc.ref, got, ok, tc.want)
		}
	}
	p := PinPath("default", "docker://127.0.0.1:5000/app:enc")
	if err := p.Validate(); err != nil || p.Type != PinType || len(p.Tag) != 64 {
		t.Errorf("PinPath = %s (%v), want default/image_pin/<64 hex>", p, err)
	}
}

func TestPinForIndexAndParse(t *testing.T) {
	t.Parallel()
	idx, err := random.Index(64, 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	p, err := PinFor(transport.Artifact{Index: idx}, "docker://r/a:t")
	if err != nil {
		t.Fatal(err)
	}
	d, _ := idx.Digest()
	if p.Digest != d || len(p.Manifests) != 3 {
		t.Errorf("pin of an index = %s with %d manifests, want %s with 3", p.Digest, len(p.Manifests), d)
	}
	raw, _ := p.Marshal()
	got, err := ParsePin(raw)
	if err != nil || !reflect.DeepEqual(got, p) {
		t.Errorf("ParsePin(Marshal(p)) = %+v, %v; want %+v", got, err, p)
	}
}

func TestParsePinRejects(t *testing.T) {
	t.Parallel()
	h := `"sha256:` + strings.Repeat("a", 64) + `"`
	for _, tc := range []struct{ name, in, want string }{
		{"version", `{"version":2,"reference":"x","mediaType":"m","digest":` + h + `}`, "version 2"},
		{"no reference", `{"version":1,"mediaType":"m","digest":` + h + `}`, "reference"},
		{"bad digest", `{"version":1,"reference":"x","mediaType":"m","digest":"sha256:zz"}`, "pin:"},
		{"sha512", `{"version":1,"reference":"x","mediaType":"m","digest":"sha512:` + strings.Repeat("a", 128) + `"}`, "sha256"},
		{"unknown field", `{"version":1,"reference":"x","mediaType":"m","digest":` + h + `,"x":1}`, "unknown field"},
		{"trailing", `{"version":1,"reference":"x","mediaType":"m","digest":` + h + `} {}`, "trailing"},
		{"too big", `{"reference":"` + strings.Repeat("x", maxPinSize) + `"}`, "bytes"},
		{"too many", strings.Repeat(`sha256:`, maxPinEntries+2), "digests"},
	} {
		_, err := ParsePin([]byte(tc.in))
		if !errors.Is(err, spec.ErrUnsupported) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: ParsePin err = %v, want ErrUnsupported containing %q", tc.name, err, tc.want)
		}
	}
}

// FuzzParsePin: whatever parses re-marshals to a pin that parses to the
// same value, and its digests are all sha256 of the right length.
func FuzzParsePin(f *testing.F) {
	p := Pin{Version: 1, Reference: "docker://r/a:t", MediaType: "m", Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("a", 64)}}
	raw, _ := p.Marshal()
	f.Add(raw)
	f.Add([]byte(`{"version":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		p, err := ParsePin(data)
		if err != nil {
			return
		}
		if p.Version != 1 || p.Reference == "" || p.Digest.Algorithm != "sha256" || len(p.Digest.Hex) != 64 {
			t.Fatalf("accepted an invalid pin %+v", p)
		}
		again, err := p.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		q, err := ParsePin(again)
		if err != nil || !reflect.DeepEqual(p, q) {
			t.Fatalf("round trip: %+v -> %+v (%v)", p, q, err)
		}
	})
}

// A multi-arch index is pinned by its digest; the image picked must be one
// it lists, and a changed index is refused.
func TestPinnedIndex(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	mk := func(arch string) mutate.IndexAddendum {
		img, _ := random.Image(64, 1)
		return mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}}
	}
	idx := mutate.AppendManifests(empty.Index, mk("amd64"), mk("arm64"))
	ref, _ := transport.Parse("oci:" + t.TempDir() + "/lay:v1")
	if err := transport.Write(ctx, ref, transport.Artifact{Index: idx}); err != nil {
		t.Fatal(err)
	}
	id, _ := Identity(ref)
	pin, err := PinFor(transport.Artifact{Index: idx}, id)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := pin.Marshal()
	store := map[string][]byte{PinPath("default", id).String(): raw}
	chk, _ := New(WithRequireSignature(true), WithPins(resource.GetterFunc(func(_ context.Context, p resource.Path) ([]byte, error) {
		if b, ok := store[p.String()]; ok {
			return b, nil
		}
		return nil, spec.ErrNotFound
	})))
	for _, arch := range []string{"amd64", "arm64"} {
		res, err := chk.Check(ctx, ref, v1.Platform{OS: "linux", Architecture: arch})
		if d, _ := idx.Digest(); err != nil || res.Digest != d || res.Image == d {
			t.Errorf("%s: %+v %v, want the index digest %s and a distinct image digest", arch, res, err, d)
		}
	}
	// One platform's image replaced: a new index, refused.
	evil := mutate.AppendManifests(empty.Index, mk("amd64"))
	if err := transport.Write(ctx, ref, transport.Artifact{Index: evil}); err != nil {
		t.Fatal(err)
	}
	if _, err := chk.Check(ctx, ref, v1.Platform{OS: "linux", Architecture: "amd64"}); !errors.Is(err, spec.ErrIntegrity) {
		t.Errorf("changed index: err = %v, want ErrIntegrity", err)
	}
}
