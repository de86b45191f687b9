package imagepolicy

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/spec"
)

func TestParsePayload(t *testing.T) {
	t.Parallel()
	d := "sha256:" + strings.Repeat("a", 64)
	ok := `{"critical":{"identity":{"docker-reference":"reg.example/app:v1"},"image":{"docker-manifest-digest":"` + d + `"},"type":"cosign container image signature"},"optional":{"creator":"x"}}`
	p, err := ParsePayload([]byte(ok), CosignSignatureType)
	if err != nil || p.Critical.Identity.DockerReference != "reg.example/app:v1" || p.Optional["creator"] != "x" {
		t.Fatalf("ParsePayload = %+v, %v", p, err)
	}
	for _, tc := range []struct{ name, in, want string }{
		{"wrong type", strings.Replace(ok, "cosign container image signature", "atomic container signature", 1), "type"},
		{"unknown critical field", strings.Replace(ok, `"type":`, `"extra":1,"type":`, 1), "unknown field"},
		{"no identity", strings.Replace(ok, "reg.example/app:v1", "", 1), "docker-reference"},
		{"bad digest", strings.Replace(ok, d, "sha256:zz", 1), "digest"},
		{"deep", `{"critical":{},"optional":` + strings.Repeat(`{"a":`, 40) + "1" + strings.Repeat("}", 40) + "}", "nested"},
		{"huge", `{"optional":"` + strings.Repeat("x", maxPayload) + `"}`, "bytes"},
	} {
		_, err := ParsePayload([]byte(tc.in), CosignSignatureType)
		if !errors.Is(err, spec.ErrUnsupported) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want ErrUnsupported containing %q", tc.name, err, tc.want)
		}
	}
}

// FuzzParsePayload: a payload from a registry is hostile. What parses has
// the type asked for, an identity and a valid digest, and its critical
// part survives a marshal/parse round trip unchanged.
func FuzzParsePayload(f *testing.F) {
	p := NewPayload("reg.example/app:v1", v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("b", 64)}, CosignSignatureType)
	raw, _ := json.Marshal(p)
	f.Add(raw)
	f.Add([]byte(`{"critical":{"type":"cosign container image signature"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		p, err := ParsePayload(data, CosignSignatureType)
		if err != nil {
			return
		}
		if p.Critical.Type != CosignSignatureType || p.Critical.Identity.DockerReference == "" {
			t.Fatalf("accepted %+v", p)
		}
		if _, err := v1.NewHash(p.Critical.Image.DockerManifestDigest); err != nil {
			t.Fatalf("accepted digest %q", p.Critical.Image.DockerManifestDigest)
		}
		b, _ := json.Marshal(p)
		q, err := ParsePayload(b, CosignSignatureType)
		if err != nil || q.Critical != p.Critical {
			t.Fatalf("round trip: %+v -> %+v (%v)", p.Critical, q.Critical, err)
		}
	})
}
