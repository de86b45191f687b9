// Package staging makes the temporary directories coffer stages output in
// (decrypted layers, a rootfs being unpacked, a layout being written)
// beside their destination, and removes those a killed run left behind.
//
// A run removes its staging directory when it returns, but not when it is
// killed (SIGKILL, OOM, power loss), and what it staged may be plaintext.
// Each directory's name carries the creating process's id; the next run
// that stages in the same parent with the same prefix removes the
// directories of processes that no longer exist. A directory of a live
// process (or one whose id was reused) is left alone.
package staging

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// MkdirTemp sweeps parent of the stale directories named prefix+PID-…
// (Sweep) and creates a new one for this process, as os.MkdirTemp does.
func MkdirTemp(parent, prefix string) (string, error) {
	if parent == "" {
		parent = os.TempDir()
	}
	Sweep(parent, prefix)
	return os.MkdirTemp(parent, fmt.Sprintf("%s%d-", prefix, os.Getpid()))
}

// Sweep removes parent's directories named prefix+PID-… whose process is
// gone, and returns how many it removed. Errors are ignored: sweeping is
// best effort and never fails the run that does it.
func Sweep(parent, prefix string) int {
	ents, err := os.ReadDir(parent)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		pid, ok := stalePID(e.Name(), prefix)
		if !ok || !e.IsDir() || pid == os.Getpid() || alive(pid) {
			continue // e.IsDir is false for a symlink: never followed
		}
		if os.RemoveAll(filepath.Join(parent, e.Name())) == nil {
			n++
		}
	}
	return n
}

// stalePID parses prefix+PID-RANDOM.
func stalePID(name, prefix string) (int, bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return 0, false
	}
	p, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(p)
	return pid, err == nil && pid > 0
}
