package ctddecoder

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
)

var needle = v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)}

func storeWith(t testing.TB, name string, data []byte) string {
	root := t.TempDir()
	dir := filepath.Join(root, "io.containerd.content.v1.content", "blobs", "sha256")
	os.MkdirAll(dir, 0o700)
	if name == "" {
		h, _, _ := v1.SHA256(bytes.NewReader(data))
		name = h.Hex
	}
	os.WriteFile(filepath.Join(dir, name), data, 0o600)
	return root
}

// Oracle: a descriptor is found only in a blob stored under its own
// digest, and it always names the digest asked for.
func FuzzLookupLayer(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"config":{"digest":"sha256:` + strings.Repeat("0", 64) + `"},"layers":[{"mediaType":"m","digest":"` + needle.String() + `","size":1,"annotations":{"a":"b"}}]}`))
	f.Add([]byte(`{"layers":[{"digest":"` + needle.String() + `"},{"digest":"` + needle.String() + `"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		got, err := lookupLayer(context.Background(), storeWith(t, "", data), needle)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range got {
			if c.desc.Digest != needle {
				t.Fatalf("found descriptor %s, asked for %s", c.desc.Digest, needle)
			}
		}
		// The same bytes under a name they do not hash to are ignored.
		wrong, err := lookupLayer(context.Background(), storeWith(t, strings.Repeat("cd", 32), data), needle)
		if err != nil || len(wrong) != 0 {
			t.Fatalf("a blob not matching its name was used: %v %v", wrong, err)
		}
	})
}
