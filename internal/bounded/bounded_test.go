package bounded

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/spec"
)

func TestReadAll(t *testing.T) {
	if b, err := ReadAll(strings.NewReader("12345"), 5); err != nil || string(b) != "12345" {
		t.Fatalf("at the limit: %q, %v", b, err)
	}
	if _, err := ReadAll(strings.NewReader("123456"), 5); !errors.Is(err, spec.ErrUnsupported) {
		t.Fatalf("over the limit: %v, want ErrUnsupported", err)
	}
}

func TestReadFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFile(p, 5); err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("over the limit: %v, want an error naming %s", err, p)
	}
	if b, err := ReadFile(p, 6); err != nil || string(b) != "abcdef" {
		t.Fatalf("at the limit: %q, %v", b, err)
	}
}

func TestPrintable(t *testing.T) {
	if got := Printable("a\x1b[2Jb\x7f", 0); got != "a?[2Jb?" {
		t.Fatalf("got %q", got)
	}
	if got := Printable(strings.Repeat("x", 10), 4); got != "xxxx…" {
		t.Fatalf("got %q", got)
	}
}
