package cli

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/internal/demo"
	"github.com/coffer-dev/coffer/kbs/kbstest"
	"github.com/coffer-dev/coffer/spec"
)

func TestSizeFlag(t *testing.T) {
	for in, want := range map[string]int64{"1": 1, "512M": 512 << 20, "64G": 64 << 30, "64GiB": 64 << 30, "2KiB": 2048, "1T": 1 << 40, "3k": 3072} {
		var s sizeFlag
		if err := s.Set(in); err != nil || s.n != want {
			t.Errorf("Set(%q) = %d, %v; want %d", in, s.n, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1", "G", "1.5G", "9999999T", "12X"} {
		var s sizeFlag
		if err := s.Set(in); err == nil {
			t.Errorf("Set(%q) accepted: %d", in, s.n)
		}
	}
	if s := (sizeFlag{64 << 30}); s.String() != "64GiB" {
		t.Errorf("String() = %q", s.String())
	}
}

// coffer pull --max-rootfs-size refuses an image over it: exit 4, no rootfs.
func TestPullSizeLimitFlags(t *testing.T) {
	dir := t.TempDir()
	if err := demo.WriteImage(filepath.Join(dir, "app"), "v1"); err != nil {
		t.Fatal(err)
	}
	b := kbstest.New(t)
	b.AffirmSample(t) // a pull with --kbs reads the image's digest pin, so the TEE must be trusted
	rootfs := filepath.Join(dir, "rootfs")
	_, err := runCoffer(t, "", "pull", "--kbs", b.URL, "--tee", "sample", "--max-rootfs-size", "8", "oci:"+filepath.Join(dir, "app")+":v1", rootfs)
	if !errors.Is(err, spec.ErrIntegrity) || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("pull over --max-rootfs-size: %v", err)
	}
	if _, serr := os.Stat(rootfs); serr == nil {
		t.Fatal("refused pull left a rootfs")
	}
	if _, err := runCoffer(t, "", "pull", "--max-file-size", "1.5G", "oci:x", rootfs); err == nil || !strings.Contains(err.Error(), "want a positive size") {
		t.Fatalf("bad --max-file-size: %v", err)
	}
	if _, err := runCoffer(t, "", "pull", "--kbs", b.URL, "--tee", "sample", "--max-file-size", "1M", "oci:"+filepath.Join(dir, "app")+":v1", rootfs); err != nil {
		t.Fatalf("pull within the limits: %v", err)
	}
}
