package tenant

import (
	"crypto/sha256"
	"fmt"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestChainIDs(t *testing.T) {
	t.Parallel()
	d := func(s string) v1.Hash {
		h, _ := v1.NewHash(fmt.Sprintf("sha256:%x", sha256.Sum256([]byte(s))))
		return h
	}
	a, b, c := d("a"), d("b"), d("c")
	ab := fmt.Sprintf("sha256:%x", sha256.Sum256([]byte(a.String()+" "+b.String())))
	abc := fmt.Sprintf("sha256:%x", sha256.Sum256([]byte(ab+" "+c.String())))
	got := ChainIDs([]v1.Hash{a, b, c})
	for i, want := range []string{a.String(), ab, abc} {
		if got[i] != want {
			t.Errorf("chain ID %d = %s, want %s", i, got[i], want)
		}
	}
}

func TestIsExtractionOf(t *testing.T) {
	t.Parallel()
	chains := []string{"sha256:aa", "sha256:bb"}
	for _, tc := range []struct {
		key  string
		want bool
	}{
		{"extract-123456-abcd sha256:aa", true},
		{"extract-1 sha256:bb", true},
		{"extract-1 sha256:cc", false},
		{"sha256:aa", false},
		{"default/1/extract-1 sha256:aa", false},
		{"extract-1sha256:aa", false},
	} {
		if got := isExtractionOf(tc.key, chains); got != tc.want {
			t.Errorf("isExtractionOf(%q) = %v, want %v", tc.key, got, tc.want)
		}
	}
}

func TestValidNamespace(t *testing.T) {
	t.Parallel()
	for ns, want := range map[string]bool{"default": true, "k8s.io": true, "tenant-a": true, "../x": false, "a/b": false, "": false, ".": false} {
		if got := ValidNamespace(ns); got != want {
			t.Errorf("ValidNamespace(%q) = %v, want %v", ns, got, want)
		}
	}
}
