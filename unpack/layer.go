package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
	maxSymlinks    = 255
	copyBufSize    = 1 << 20
	// sparseChunk is how much of a sparse file copy reads at a time: small
	// enough that the zeros archive/tar makes for a hole stay in cache
	// while they are checked, large enough to keep calls few.
	sparseChunk = 256 << 10
)

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// applier holds the state of one layer being applied.
type applier struct {
	ctx  context.Context
	root *os.Root
	o    *options
	buf  []byte

	// dirs caches resolved paths known to be real directories (not
	// symlinks); cleared whenever anything is removed.
	dirs map[string]bool
	// written holds the resolved paths this layer created, under holds
	// their ancestors: whiteouts and opaque markers must spare both.
	written map[string]struct{}
	under   map[string]struct{}
	// dirMeta is applied once the layer is done, deepest last-seen first,
	// so writing children does not undo a directory's mtime or lock us out.
	dirMeta []dirMeta
	// proot is an os.Root on the resolved directory pdir, kept while
	// consecutive regular files go into the same directory, so creating
	// each one is a single-component open. Dropped on any removal.
	proot *os.Root
	pdir  string
	*state
}

// state lives across the layers of one Apply (or one ApplyLayer).
type state struct {
	// locked collects, when unprivileged, directories whose final mode
	// denies us write or search access; set by restoreModes at the end.
	locked dirModes
	// total is the sum of the apparent sizes of the regular files so far.
	total int64
}

func newState(o *options) *state { return &state{locked: newDirModes(o)} }

type dirModes map[string]fs.FileMode

func newDirModes(o *options) dirModes {
	if o.privileged {
		return nil // root is not stopped by directory modes
	}
	return dirModes{}
}

// restoreModes gives the collected directories their final modes,
// deepest first.
func restoreModes(root *os.Root, m dirModes) error {
	paths := make([]string, 0, len(m))
	for p := range m {
		paths = append(paths, p)
	}
	sort.Slice(paths, func(i, j int) bool { return len(paths[i]) > len(paths[j]) })
	for _, p := range paths {
		fi, err := root.Lstat(p)
		if err != nil || !fi.IsDir() {
			continue
		}
		if err := root.Chmod(p, m[p]); err != nil {
			return err
		}
	}
	return nil
}

type dirMeta struct {
	path         string
	mode         fs.FileMode
	atime, mtime time.Time
}

func applyLayer(ctx context.Context, root *os.Root, r io.Reader, o *options, st *state) error {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	a := &applier{
		ctx: ctx, root: root, o: o, buf: *bp,
		dirs:    map[string]bool{".": true},
		written: map[string]struct{}{},
		under:   map[string]struct{}{},
		state:   st,
	}
	defer a.dropParent()
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("reading layer tar: %w", err)
		}
		if err := a.entry(hdr, tr); err != nil {
			return fmt.Errorf("entry %q: %w", hdr.Name, err)
		}
	}
	return a.finishDirs()
}

// cleanName confines a tar entry name to the rootfs: it drops leading
// slashes and cleans the rest, and rejects names that climb above it.
// The rootfs itself is ".".
func cleanName(name string) (string, error) {
	p := path.Clean(strings.TrimLeft(name, "/"))
	if p == ".." || strings.HasPrefix(p, "../") {
		return "", fmt.Errorf("%q climbs out of the rootfs: %w", name, ErrUnsafePath)
	}
	return p, nil
}

func (a *applier) entry(hdr *tar.Header, tr *tar.Reader) error {
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	dir, base := path.Dir(name), path.Base(name)
	if name != "." && strings.HasPrefix(base, whiteoutPrefix) {
		return a.whiteout(dir, base)
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeGNUSparse:
		if err := a.reserve(hdr.Size); err != nil {
			return err
		}
	case tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
	default:
		a.o.log.Debug("skipping tar entry of unhandled type", "name", hdr.Name, "type", string(hdr.Typeflag))
		return nil
	}
	p := "."
	if name != "." {
		parent, err := a.resolve(dir)
		if err != nil {
			return err
		}
		p = join(parent, base)
	}
	if p == "." && hdr.Typeflag != tar.TypeDir {
		return fmt.Errorf("the rootfs itself must be a directory: %w", ErrUnsafePath)
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		err = a.mkdir(p, hdr)
	case tar.TypeReg, tar.TypeGNUSparse:
		err = a.regular(p, hdr, tr)
	case tar.TypeSymlink:
		err = a.create(p, func() error { return a.root.Symlink(hdr.Linkname, p) })
		if err == nil {
			err = a.linkMeta(p, hdr)
		}
	case tar.TypeLink:
		err = a.hardlink(p, hdr)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		err = a.special(p, hdr)
	}
	if err != nil {
		return err
	}
	a.mark(p)
	return nil
}

// reserve counts a regular file of the given apparent size against the
// limits, before anything of it is read or written.
func (a *applier) reserve(size int64) error {
	if size > a.o.maxFile {
		return fmt.Errorf("file of %s (holes included) is over the limit of %s per file: %w", iec(size), iec(a.o.maxFile), ErrTooLarge)
	}
	if size > a.o.maxTotal-a.total {
		return fmt.Errorf("file of %s (holes included) takes the rootfs over its limit of %s (%s before it): %w", iec(size), iec(a.o.maxTotal), iec(a.total), ErrTooLarge)
	}
	a.total += size
	return nil
}

// iec formats a byte count for people: "64 GiB" when it is a whole number
// of a binary unit, the exact count of bytes otherwise.
func iec(n int64) string {
	for i, unit := range []string{"EiB", "PiB", "TiB", "GiB", "MiB", "KiB"} {
		if u := int64(1) << (10 * (6 - i)); n >= u && n%u == 0 {
			return fmt.Sprintf("%d %s", n/u, unit)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}

func join(dir, base string) string {
	if dir == "." || dir == "" {
		return base
	}
	return dir + "/" + base
}

// resolve follows the symbolic links in every component of name (a clean
// relative path inside the rootfs) as a chroot at the rootfs would:
// absolute targets restart at the rootfs and ".." never leaves it. Missing
// components are kept as they are. The result has no symlink in it.
func (a *applier) resolve(name string) (string, error) {
	if a.dirs[name] {
		return name, nil
	}
	todo := strings.Split(name, "/")
	cur := "."
	links := 0
	missing := false
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if missing {
				return "", fmt.Errorf("resolving %q: %w", name, fs.ErrNotExist)
			}
			cur = path.Dir(cur)
			continue
		}
		next := join(cur, c)
		if missing || a.dirs[next] {
			cur = next
			continue
		}
		fi, err := a.root.Lstat(next)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			missing = true
			cur = next
		case err != nil:
			return "", err
		case fi.Mode()&fs.ModeSymlink != 0:
			if links++; links > maxSymlinks {
				return "", fmt.Errorf("resolving %q: %w", name, syscall.ELOOP)
			}
			target, err := a.root.Readlink(next)
			if err != nil {
				return "", err
			}
			if strings.HasPrefix(target, "/") {
				cur = "."
			}
			todo = append(strings.Split(target, "/"), todo...)
		case fi.IsDir():
			a.dirs[next] = true
			cur = next
		default:
			return "", fmt.Errorf("resolving %q: %s: %w", name, next, syscall.ENOTDIR)
		}
	}
	return cur, nil
}

// mark records that this layer wrote p.
func (a *applier) mark(p string) {
	a.written[p] = struct{}{}
	for d := path.Dir(p); d != "."; d = path.Dir(d) {
		if _, ok := a.under[d]; ok {
			break
		}
		a.under[d] = struct{}{}
	}
}

// whiteout handles ".wh.NAME" and ".wh..wh..opq" in directory dir.
func (a *applier) whiteout(dir, base string) error {
	if base != whiteoutOpaque && strings.HasPrefix(base, whiteoutMeta) {
		a.o.log.Debug("skipping whiteout metadata entry", "name", join(dir, base))
		return nil
	}
	pdir, err := a.resolve(dir)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil // nothing below to hide
	}
	if err != nil {
		return err
	}
	if base == whiteoutOpaque {
		names, err := a.readDir(pdir)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
				return nil
			}
			return err
		}
		for _, n := range names {
			if err := a.pruneLower(join(pdir, n)); err != nil {
				return err
			}
		}
		return nil
	}
	target := strings.TrimPrefix(base, whiteoutPrefix)
	if target == "" || target == "." || target == ".." {
		return fmt.Errorf("whiteout %q names no file: %w", base, ErrUnsafePath)
	}
	return a.pruneLower(join(pdir, target))
}

// pruneLower removes p, except what this layer itself wrote at or below it.
func (a *applier) pruneLower(p string) error {
	if _, ok := a.written[p]; ok {
		return nil
	}
	if _, ok := a.under[p]; !ok {
		return a.removeAll(p)
	}
	names, err := a.readDir(p)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := a.pruneLower(join(p, n)); err != nil {
			return err
		}
	}
	return nil
}

func (a *applier) readDir(p string) ([]string, error) {
	f, err := a.root.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

func (a *applier) removeAll(p string) error {
	a.dropParent()
	clear(a.dirs)
	a.dirs["."] = true
	if err := a.root.RemoveAll(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// create runs mk; if something is already at p it removes it and runs mk
// again. If the parent is missing it creates it (0755) first.
func (a *applier) create(p string, mk func() error) error {
	err := mk()
	if errors.Is(err, fs.ErrNotExist) {
		if err := a.root.MkdirAll(path.Dir(p), 0o755); err != nil {
			return err
		}
		err = mk()
	}
	if errors.Is(err, fs.ErrExist) {
		if err := a.removeExisting(p); err != nil {
			return err
		}
		err = mk()
	}
	return err
}

// removeExisting removes what is at p so a new entry can take its place:
// a plain Remove for files and links (the directory cache stays valid),
// RemoveAll for directories.
func (a *applier) removeExisting(p string) error {
	fi, err := a.root.Lstat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return a.removeAll(p)
	}
	return a.root.Remove(p)
}

func mode(hdr *tar.Header) fs.FileMode {
	return hdr.FileInfo().Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
}

func times(hdr *tar.Header) (atime, mtime time.Time) {
	mtime = hdr.ModTime
	atime = hdr.AccessTime
	if atime.IsZero() {
		atime = mtime
	}
	return atime, mtime
}

func (a *applier) mkdir(p string, hdr *tar.Header) error {
	if p != "." {
		err := a.root.Mkdir(p, 0o700)
		if errors.Is(err, fs.ErrNotExist) {
			if err = a.root.MkdirAll(path.Dir(p), 0o755); err == nil {
				err = a.root.Mkdir(p, 0o700)
			}
		}
		if errors.Is(err, fs.ErrExist) {
			fi, lerr := a.root.Lstat(p)
			if lerr != nil {
				return lerr
			}
			if fi.IsDir() {
				err = nil // merge with the lower directory
			} else if err = a.root.Remove(p); err == nil {
				err = a.root.Mkdir(p, 0o700)
			}
		}
		if err != nil {
			return err
		}
		a.dirs[p] = true
	}
	if a.o.sameOwner {
		if err := a.root.Lchown(p, hdr.Uid, hdr.Gid); err != nil {
			return err
		}
	}
	a.xattrsPath(p, hdr)
	atime, mtime := times(hdr)
	a.dirMeta = append(a.dirMeta, dirMeta{path: p, mode: mode(hdr), atime: atime, mtime: mtime})
	return nil
}

// finishDirs sets the modes and times of this layer's directories, last
// first, now that nothing more is written into them.
func (a *applier) finishDirs() error {
	for i := len(a.dirMeta) - 1; i >= 0; i-- {
		d := a.dirMeta[i]
		fi, err := a.root.Lstat(d.path)
		if err != nil || !fi.IsDir() {
			continue // replaced or removed later in the layer
		}
		m := d.mode
		if a.locked != nil {
			// Unprivileged: keep the directory writable for us until the
			// end of the unpack, or later entries could not go into it.
			if m&0o700 != 0o700 {
				a.locked[d.path] = m
				m |= 0o700
			} else {
				delete(a.locked, d.path)
			}
		}
		if err := a.root.Chmod(d.path, m); err != nil {
			return fmt.Errorf("entry %q: %w", d.path, err)
		}
		if err := a.root.Chtimes(d.path, d.atime, d.mtime); err != nil {
			return fmt.Errorf("entry %q: %w", d.path, err)
		}
	}
	return nil
}

func (a *applier) regular(p string, hdr *tar.Header, tr *tar.Reader) error {
	dir, base := path.Dir(p), path.Base(p)
	var f *os.File
	open := func() error {
		pr, err := a.parent(dir)
		if errors.Is(err, fs.ErrNotExist) {
			if err = a.root.MkdirAll(dir, 0o755); err == nil {
				pr, err = a.parent(dir)
			}
		}
		if err != nil {
			return err
		}
		f, err = pr.OpenFile(base, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		return err
	}
	err := open()
	if errors.Is(err, fs.ErrExist) {
		if err = a.removeExisting(p); err == nil {
			err = open()
		}
	}
	if err != nil {
		return err
	}
	if err := a.fill(f, hdr, tr); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// parent returns an os.Root on the resolved directory dir (cached).
func (a *applier) parent(dir string) (*os.Root, error) {
	if a.proot != nil && a.pdir == dir {
		return a.proot, nil
	}
	a.dropParent()
	r, err := a.root.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	a.proot, a.pdir = r, dir
	return r, nil
}

func (a *applier) dropParent() {
	if a.proot != nil {
		a.proot.Close()
		a.proot = nil
	}
}

func (a *applier) fill(f *os.File, hdr *tar.Header, tr *tar.Reader) error {
	if err := a.copy(f, tr, isSparse(hdr)); err != nil {
		return err
	}
	if a.o.sameOwner {
		if err := f.Chown(hdr.Uid, hdr.Gid); err != nil {
			return err
		}
	}
	// After chown, which clears set-id bits and file capabilities.
	if err := f.Chmod(mode(hdr)); err != nil {
		return err
	}
	a.xattrsFile(f, hdr)
	atime, mtime := times(hdr)
	return futimes(f, atime, mtime)
}

// isSparse reports whether hdr is a GNU sparse file (old GNU or PAX form),
// whose holes archive/tar expands into zeros.
func isSparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// copy streams the entry's contents with a large buffer (one write per
// MiB), checking ctx between chunks. For sparse entries, whose holes
// archive/tar expands into zeros, it reads smaller chunks and writes only
// those that are not all zero, at their offset, so holes stay holes on disk
// and a hole costs no more than a cached memory scan; the size limits
// checked before (reserve) bound how much of that there is.
func (a *applier) copy(f *os.File, r io.Reader, sparse bool) error {
	buf := a.buf
	if sparse {
		buf = buf[:sparseChunk]
	}
	var off int64
	defer func() {
		if sparse {
			_ = f.Truncate(off)
		}
	}()
	for {
		if err := a.ctx.Err(); err != nil {
			return err
		}
		n := 0
		var err error
		for n < len(buf) && err == nil {
			var m int
			m, err = r.Read(buf[n:])
			n += m
		}
		switch {
		case n == 0:
		case !sparse:
			if _, werr := f.Write(buf[:n]); werr != nil {
				return werr
			}
		case !allZero(buf[:n]):
			if _, werr := f.WriteAt(buf[:n], off); werr != nil {
				return werr
			}
		}
		off += int64(n)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (a *applier) hardlink(p string, hdr *tar.Header) error {
	name, err := cleanName(hdr.Linkname)
	if err != nil {
		return fmt.Errorf("hard link target: %w", err)
	}
	if name == "." {
		return fmt.Errorf("hard link to the rootfs: %w", ErrUnsafePath)
	}
	tdir, err := a.resolve(path.Dir(name))
	if err != nil {
		return fmt.Errorf("hard link target %q: %w", hdr.Linkname, err)
	}
	target := join(tdir, path.Base(name))
	if target == p {
		return nil // a link to itself: already there
	}
	fi, err := a.root.Lstat(target)
	if err != nil {
		return fmt.Errorf("hard link target %q: %w", hdr.Linkname, err)
	}
	if fi.IsDir() {
		return fmt.Errorf("hard link target %q is a directory: %w", hdr.Linkname, ErrUnsafePath)
	}
	return a.create(p, func() error { return a.root.Link(target, p) })
}

// special creates device nodes and fifos, only with the privilege to.
func (a *applier) special(p string, hdr *tar.Header) error {
	if !a.o.privileged {
		a.o.log.Warn("skipping device or fifo: not running as root", "name", hdr.Name, "type", string(hdr.Typeflag))
		return nil
	}
	err := a.create(p, func() error { return a.mknod(p, hdr) })
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, errNoMknod) {
		a.o.log.Warn("skipping device or fifo: cannot create it here", "name", hdr.Name, "err", err)
		return nil
	}
	if err != nil {
		return err
	}
	if a.o.sameOwner {
		if err := a.root.Lchown(p, hdr.Uid, hdr.Gid); err != nil {
			return err
		}
	}
	if err := a.root.Chmod(p, mode(hdr)); err != nil {
		return err
	}
	atime, mtime := times(hdr)
	return a.root.Chtimes(p, atime, mtime)
}

// linkMeta sets owner and times of a symlink itself, never its target.
func (a *applier) linkMeta(p string, hdr *tar.Header) error {
	if a.o.sameOwner {
		if err := a.root.Lchown(p, hdr.Uid, hdr.Gid); err != nil {
			return err
		}
	}
	atime, mtime := times(hdr)
	if err := a.lutimes(p, atime, mtime); err != nil {
		a.o.log.Debug("setting symlink times", "name", hdr.Name, "err", err)
	}
	return nil
}

// xattrs lists the SCHILY.xattr.* records of hdr.
func xattrs(hdr *tar.Header) map[string]string {
	var m map[string]string
	for k, v := range hdr.PAXRecords {
		if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			if m == nil {
				m = map[string]string{}
			}
			m[name] = v
		}
	}
	return m
}

func (a *applier) xattrsFile(f *os.File, hdr *tar.Header) {
	for k, v := range xattrs(hdr) {
		if err := fsetxattr(f, k, v); err != nil {
			a.o.log.Debug("xattr not kept", "name", hdr.Name, "xattr", k, "err", err)
		}
	}
}

func (a *applier) xattrsPath(p string, hdr *tar.Header) {
	x := xattrs(hdr)
	if len(x) == 0 {
		return
	}
	f, err := a.root.Open(p)
	if err != nil {
		a.o.log.Debug("xattrs not kept", "name", hdr.Name, "err", err)
		return
	}
	defer f.Close()
	a.xattrsFile(f, hdr)
}

// zeros is compared against by allZero: bytes.Equal is vectorised.
var zeros [64 << 10]byte

func allZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeros))
		if !bytes.Equal(b[:n], zeros[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}
