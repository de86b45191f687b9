package filecrypt_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/filecrypt"
)

// The helper half of TestW26SigkillLeavesNothing: decrypt from a FIFO the
// parent feeds (and kills us while feeding).
func TestHelperDecryptFromFIFO(t *testing.T) {
	in := os.Getenv("COFFER_TEST_FIFO")
	if in == "" {
		t.Skip("helper process only")
	}
	key, _ := hex.DecodeString(os.Getenv("COFFER_TEST_KEY"))
	_, err := filecrypt.DecryptFile(context.Background(), in, os.Getenv("COFFER_TEST_OUT"), key)
	t.Fatalf("the helper was meant to be killed mid-run, but DecryptFile returned: %v", err)
}

// W26 (review 3): `kill -9` of a decrypting process mid-run leaves no
// staged plaintext: while it runs, no name in the output directory holds
// any (O_TMPFILE), and after SIGKILL no .tmp-* or output file remains.
func TestW26SigkillLeavesNothing(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	plain := make([]byte, 16<<20)
	rand.Read(plain)
	key := make([]byte, 32)
	rand.Read(key)
	src, enc := filepath.Join(t.TempDir(), "plain"), filepath.Join(t.TempDir(), "enc")
	os.WriteFile(src, plain, 0o600)
	if _, err := filecrypt.EncryptFile(t.Context(), src, enc, key); err != nil {
		t.Fatal(err)
	}
	ct, _ := os.ReadFile(enc)
	fifo := filepath.Join(t.TempDir(), "in.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("no FIFOs here: %v", err)
	}
	out := filepath.Join(dir, "disk.img")
	self, _ := os.Executable()
	cmd := exec.Command(self, "-test.run", "^TestHelperDecryptFromFIFO$")
	cmd.Env = append(os.Environ(), "COFFER_TEST_FIFO="+fifo, "COFFER_TEST_OUT="+out, "COFFER_TEST_KEY="+hex.EncodeToString(key))
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0) // blocks until the child opens it
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(ct[:len(ct)/2]); err != nil { // returns once the child read all but a pipe buffer
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let it write what it read
	names := func() []string {
		es, _ := os.ReadDir(dir)
		var n []string
		for _, e := range es {
			n = append(n, e.Name())
		}
		return n
	}
	if n := names(); len(n) != 0 {
		t.Errorf("mid-run, the output directory holds %v: staged plaintext has a name", n)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	werr := cmd.Wait()
	w.Close()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the child was not killed by SIGKILL (%v): %s", werr, stderr.String())
	}
	if n := names(); len(n) != 0 {
		t.Errorf("after kill -9 the output directory holds %v, want nothing (no .tmp-*, no %s)", n, filepath.Base(out))
	}
	// nothing anywhere near holds plaintext
	filepath.WalkDir(filepath.Dir(dir), func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && strings.HasPrefix(d.Name(), ".tmp-") {
			t.Errorf("stray staged file %s", p)
		}
		return nil
	})
}
