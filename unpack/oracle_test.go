package unpack

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/internal/testutil"
)

// randomTree makes a deterministic tar of dirs, files, symlinks and hard
// links with assorted modes, owners and mtimes (no whiteouts, no escapes).
func randomTree(t *testing.T, seed uint64) []byte {
	rnd := rand.New(rand.NewPCG(seed, 1))
	dirs := []string{"."}
	var files []string
	var ents []ent
	mt := func() time.Time { return time.Unix(1e9+rnd.Int64N(1e8), 0).UTC() }
	modes := []int64{0o755, 0o700, 0o644, 0o600, 0o4755, 0o2755, 0o1777, 0o444}
	for i := range 300 {
		parent := dirs[rnd.IntN(len(dirs))]
		name := filepath.Join(parent, fmt.Sprintf("n%d", i))
		owner := []int{0, 1, 1000, 65534}[rnd.IntN(4)]
		switch k := rnd.IntN(10); {
		case k < 3:
			dirs = append(dirs, name)
			ents = append(ents, ent{name: name + "/", typ: tar.TypeDir, mode: []int64{0o755, 0o750, 0o711, 0o1777}[rnd.IntN(4)], uid: owner, gid: owner, mtime: mt()})
		case k < 7:
			files = append(files, name)
			body := strings.Repeat(fmt.Sprintf("%d,", i), rnd.IntN(5000))
			ents = append(ents, ent{name: name, body: body, mode: modes[rnd.IntN(len(modes))], uid: owner, gid: owner + 1, mtime: mt()})
		case k < 9:
			target := []string{"../" + filepath.Base(name), "/etc/passwd", "n0", "."}[rnd.IntN(4)]
			ents = append(ents, ent{name: name, typ: tar.TypeSymlink, link: target, uid: owner, gid: owner, mtime: mt()})
		default:
			if len(files) > 0 {
				ents = append(ents, ent{name: name, typ: tar.TypeLink, link: files[rnd.IntN(len(files))]})
			}
		}
	}
	return mkTar(t, ents...)
}

type nodeInfo struct {
	mode     fs.FileMode
	uid, gid uint32
	nlink    uint64
	mtime    int64
	content  string
}

func snapshot(t *testing.T, root string) map[string]nodeInfo {
	t.Helper()
	m := map[string]nodeInfo{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		rel, _ := filepath.Rel(root, p)
		n := nodeInfo{mode: fi.Mode(), uid: st.Uid, gid: st.Gid, nlink: uint64(st.Nlink)}
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			n.content = fmt.Sprintf("%x", sha256.Sum256(b))
			n.mtime = fi.ModTime().Unix()
		case fi.Mode()&fs.ModeSymlink != 0:
			n.content, _ = os.Readlink(p)
		case fi.IsDir():
			// Link counts follow from the walk. Mtimes are not compared: GNU
			// tar restores a directory's mtime when the archive moves on, so
			// later children in a shuffled order bump it; Apply restores
			// them at the end of the layer (TestApplyBasicEntries).
			n.nlink = 0
		}
		m[rel] = n
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestMatchesGNUTar compares Apply with GNU tar (-p --numeric-owner) on
// random trees: same paths, modes, owners, link counts, contents, file
// mtimes and symlink targets.
func TestMatchesGNUTar(t *testing.T) {
	tarBin := testutil.RequireTool(t, "tar")
	testutil.RequireExternal(t, os.Geteuid() == 0, "compares ownership with GNU tar's: needs root")
	for seed := range uint64(3) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			layer := randomTree(t, seed)
			s := newSandbox(t)
			if err := apply(t, s, tarLayers(layer)); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			ref := filepath.Join(t.TempDir(), "ref")
			os.Mkdir(ref, 0o755)
			cmd := exec.Command(tarBin, "-xpf", "-", "--numeric-owner", "--same-owner", "-C", ref)
			cmd.Stdin = bytes.NewReader(layer)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("tar: %v\n%s", err, out)
			}
			got, want := snapshot(t, s.rootfs), snapshot(t, ref)
			var keys []string
			for k := range want {
				keys = append(keys, k)
			}
			for k := range got {
				if _, ok := want[k]; !ok {
					t.Errorf("%s: only in Apply's rootfs", k)
				}
			}
			sort.Strings(keys)
			for _, k := range keys {
				g, ok := got[k]
				if !ok {
					t.Errorf("%s: missing from Apply's rootfs", k)
					continue
				}
				if w := want[k]; g != w {
					t.Errorf("%s: got %+v, GNU tar has %+v", k, g, w)
				}
			}
		})
	}
}
