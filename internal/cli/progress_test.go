package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"golang.org/x/sys/unix"
)

// randomOCI writes an image of n random layers of size bytes as oci:DIR:v1.
func randomOCI(t *testing.T, size int64, n int) string {
	t.Helper()
	img, err := random.Image(size, int64(n))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "src")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "v1"})); err != nil {
		t.Fatal(err)
	}
	return "oci:" + dir + ":v1"
}

func runCofferStderr(t *testing.T, stderr io.Writer, args ...string) error {
	t.Helper()
	root := NewRoot()
	root.SetOut(io.Discard)
	root.SetErr(stderr)
	root.SetArgs(args)
	return root.ExecuteContext(context.Background())
}

// --progress always writes one line per blob (bytes, total, rate) and one
// for the registry write, into any writer; auto and never are silent off a
// terminal.
func TestProgressAlwaysNeverAuto(t *testing.T) {
	_, pub := writeKeyPair(t, t.TempDir(), "k")
	src := randomOCI(t, 3<<20, 2)
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	dst := "docker://" + strings.TrimPrefix(srv.URL, "http://") + "/app:enc"

	var buf bytes.Buffer
	if err := runCofferStderr(t, &buf, "encrypt", "--progress", "always", "--recipient", "jwe:"+pub, src, dst); err != nil {
		t.Fatalf("encrypt: %v\n%s", err, buf.String())
	}
	out := buf.String()
	if n := strings.Count(out, "Copying blob sha256:"); n < 2 || strings.Count(out, "3.0 MiB / 3.0 MiB") < 2 || !strings.Contains(out, "MiB/s") || !strings.Contains(out, "done in") {
		t.Errorf("--progress always: %d blob lines, want both layers at 3.0 MiB / 3.0 MiB with rate and done:\n%s", n, out)
	}
	if !strings.Contains(out, "Writing to "+dst) {
		t.Errorf("--progress always: no registry write line:\n%s", out)
	}
	if strings.Contains(out, "\x1b[") {
		t.Errorf("terminal escapes written to a non-terminal:\n%q", out)
	}
	for _, mode := range []string{"never", "auto"} {
		buf.Reset()
		if err := runCofferStderr(t, &buf, "encrypt", "--progress", mode, "--recipient", "jwe:"+pub, src, "oci:"+filepath.Join(t.TempDir(), "o")+":v1"); err != nil {
			t.Fatal(err)
		}
		if buf.Len() != 0 {
			t.Errorf("--progress %s off a terminal printed %q", mode, buf.String())
		}
	}
	if err := runCofferStderr(t, io.Discard, "encrypt", "--progress", "sometimes", "--recipient", "jwe:"+pub, src, dst); ExitCode(err) != 2 {
		t.Errorf("--progress sometimes: %v, want a usage error", err)
	}
}

// openPTY returns a pseudo-terminal's master and slave ends.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	var unlock int32
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, m.Fd(), unix.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Fatal(e)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); m.Close() })
	return m, s
}

// On a terminal (auto, the default) the blob lines are redrawn in place.
func TestProgressOnATerminal(t *testing.T) {
	master, slave := openPTY(t)
	got := make(chan string)
	go func() {
		var b bytes.Buffer
		io.Copy(&b, master) // until the slave closes (EIO)
		got <- b.String()
	}()
	_, pub := writeKeyPair(t, t.TempDir(), "k")
	src := randomOCI(t, 2<<20, 1)
	err := runCofferStderr(t, slave, "encrypt", "--recipient", "jwe:"+pub, src, "oci:"+filepath.Join(t.TempDir(), "o")+":v1")
	slave.Close()
	out := <-got
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "Copying blob sha256:") || !strings.Contains(out, "2.0 MiB / 2.0 MiB") || !strings.Contains(out, "\x1b[2K") {
		t.Errorf("terminal progress: %q", out)
	}
}
