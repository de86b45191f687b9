package cli

import (
	"runtime"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	old := Version
	defer func() { Version, Commit = old, "" }()
	Version, Commit = "v1.2.3", "abc123"
	out, err := runCoffer(t, "", "version")
	if err != nil || strings.TrimSpace(out) != "coffer v1.2.3 (commit abc123) "+runtime.Version() {
		t.Fatalf("coffer version = %q, %v", out, err)
	}
	Version, Commit = "", ""
	if s := versionString(); !strings.HasPrefix(s, "coffer ") || !strings.Contains(s, "(commit ") {
		t.Fatalf("unstamped version %q", s)
	}
}
