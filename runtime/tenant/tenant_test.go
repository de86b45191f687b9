package tenant

import (
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
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

// info encodes a snapshots.v1.Info as containerd sends it.
func info(name string, kind uint64, labels map[string]string) []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, name)
	b = protowire.AppendTag(b, 3, protowire.VarintType)
	b = protowire.AppendVarint(b, kind)
	for k, v := range labels {
		var e []byte
		e = protowire.AppendTag(e, 1, protowire.BytesType)
		e = protowire.AppendString(e, k)
		e = protowire.AppendTag(e, 2, protowire.BytesType)
		e = protowire.AppendString(e, v)
		b = protowire.AppendTag(b, 6, protowire.BytesType)
		b = protowire.AppendBytes(b, e)
	}
	return b
}

func TestParseInfo(t *testing.T) {
	t.Parallel()
	ref := "127.0.0.1:5000/team-a/app:1"
	a, kind, err := parseInfo(info("extract-1 sha256:aa", kindActive, map[string]string{CRIImageRefLabel: ref, "containerd.io/snapshot/cri.layer-digest": "sha256:bb"}))
	if err != nil || kind != kindActive || a.name != "extract-1 sha256:aa" || a.imageRef != ref {
		t.Errorf("parseInfo = %+v %d %v", a, kind, err)
	}
	long := strings.Repeat("a", maxRefLen+1)
	if a, _, _ := parseInfo(info("x", kindActive, map[string]string{CRIImageRefLabel: long})); a.imageRef != "" {
		t.Error("an over-long reference was kept")
	}
	if _, _, err := parseInfo([]byte{0x0a, 0x05, 'a'}); err == nil {
		t.Error("truncated message accepted")
	}
}

// FuzzParseInfo: containerd's answers are parsed without panics, and a
// reference longer than maxRefLen is never kept.
func FuzzParseInfo(f *testing.F) {
	f.Add(info("extract-1 sha256:aa", kindActive, map[string]string{CRIImageRefLabel: "r/x:1"}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		a, _, _ := parseInfo(b)
		if len(a.imageRef) > maxRefLen {
			t.Fatalf("kept a %d-byte reference", len(a.imageRef))
		}
	})
}
