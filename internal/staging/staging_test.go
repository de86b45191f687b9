package staging

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// A dead process's staging is removed, a live one's and anything not
// named by the scheme are kept.
func TestSweep(t *testing.T) {
	dir := t.TempDir()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Skip("no true(1):", err)
	}
	deadPID := dead.ProcessState.Pid()
	mk := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Join(p, "sub"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p, "sub", "layer"), []byte("plaintext"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	stale := mk(".coffer-stage-" + strconv.Itoa(deadPID) + "-123")
	live := mk(".coffer-stage-" + strconv.Itoa(os.Getppid()) + "-456")
	other := mk(".coffer-stage-notapid")
	foreign := mk(".coffer-pull-" + strconv.Itoa(deadPID) + "-789")
	if err := os.Symlink(t.TempDir(), filepath.Join(dir, ".coffer-stage-"+strconv.Itoa(deadPID)+"-link")); err != nil {
		t.Fatal(err)
	}
	p, err := MkdirTemp(dir, ".coffer-stage-")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("the dead process's staging is still there: %v", err)
	}
	for _, keep := range []string{live, other, foreign, p, filepath.Join(dir, ".coffer-stage-"+strconv.Itoa(deadPID)+"-link")} {
		if _, err := os.Lstat(keep); err != nil {
			t.Errorf("%s was removed: %v", keep, err)
		}
	}
	if want := ".coffer-stage-" + strconv.Itoa(os.Getpid()) + "-"; filepath.Base(p)[:len(want)] != want {
		t.Errorf("new staging %s does not carry this process's id", p)
	}
}
