package pgtest

import (
	"strings"
	"testing"
)

// Without the server binaries the error says what to install (the skip
// message tests print).
func TestFindBinMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := findBin("/nonexistent/postgresql/*/bin")
	if err == nil || !strings.Contains(err.Error(), "apt-get install postgresql") {
		t.Fatalf("got %v, want an error naming the Debian package", err)
	}
}

func TestTraversable(t *testing.T) {
	if !traversable("/") {
		t.Error("/ not traversable")
	}
	if traversable("/nonexistent/x") {
		t.Error("a missing directory is traversable")
	}
}
