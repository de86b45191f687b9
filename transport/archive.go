package transport

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/coffer-dev/coffer/internal/atomicfile"
	"github.com/coffer-dev/coffer/internal/staging"
	"github.com/coffer-dev/coffer/spec"
)

func typesMediaType(s string) types.MediaType { return types.MediaType(s) }

// readOCIArchive extracts the tar of an OCI layout into a temp dir.
func readOCIArchive(ctx context.Context, r localRef) (Artifact, func() error, error) {
	f, err := os.Open(r.path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return Artifact{}, nil, fmt.Errorf("reading %s: %w", r, spec.ErrNotFound)
		}
		return Artifact{}, nil, fmt.Errorf("reading %s: %w", r, err)
	}
	defer f.Close()
	tmp, err := os.MkdirTemp("", "coffer-oci-archive-")
	if err != nil {
		return Artifact{}, nil, err
	}
	cleanup := func() error { return os.RemoveAll(tmp) }
	st, err := f.Stat()
	if err != nil {
		cleanup()
		return Artifact{}, nil, fmt.Errorf("reading %s: %w", r, err)
	}
	if err := extractTar(ctx, f, tmp, st.Size()); err != nil {
		cleanup()
		return Artifact{}, nil, fmt.Errorf("reading %s: %w", r, err)
	}
	a, err := readLayout(tmp, r.tag, r.digest)
	if err != nil {
		cleanup()
		return Artifact{}, nil, fmt.Errorf("reading %s: %w", r, err)
	}
	return a, cleanup, nil
}

// extractTar unpacks regular files and directories only, confined to dir
// through os.Root: an archive cannot write outside it. An OCI layout holds
// no holes, so it never extracts to more than the archive's own size
// (limit): sparse entries declaring huge sizes are refused.
func extractTar(ctx context.Context, r io.Reader, dir string, limit int64) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("not a valid tar archive: %w", err)
		}
		name := filepath.Clean(strings.TrimPrefix(h.Name, "./"))
		if name == "." {
			continue
		}
		if !filepath.IsLocal(name) {
			return fmt.Errorf("archive entry %q escapes the archive: %w", h.Name, spec.ErrIntegrity)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if d := filepath.Dir(name); d != "." {
				if err := root.MkdirAll(d, 0o755); err != nil {
					return err
				}
			}
			w, err := root.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			if h.Size > limit {
				w.Close()
				return fmt.Errorf("archive entry %q declares %d bytes, more than the archive holds: %w", h.Name, h.Size, spec.ErrIntegrity)
			}
			n, err := io.Copy(w, tr)
			limit -= n
			if cerr := w.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		default:
			// Links and devices have no place in an OCI layout archive.
			return fmt.Errorf("archive entry %q has unsupported type %q", h.Name, h.Typeflag)
		}
	}
}

// writeOCIArchive builds the layout in a temp dir, tars it to a temp file
// next to FILE and renames it into place.
func writeOCIArchive(ctx context.Context, r localRef, a Artifact) error {
	dir := filepath.Dir(filepath.Clean(r.path))
	tmp, err := staging.MkdirTemp(dir, ".coffer-oci-archive-") // sweeps what a killed run left
	if err != nil {
		return fmt.Errorf("writing %s: %w", r, err)
	}
	defer os.RemoveAll(tmp)
	lay := filepath.Join(tmp, "layout")
	if err := writeLayout(ctx, lay, r.tag, a); err != nil {
		return fmt.Errorf("writing %s: %w", r, err)
	}
	return atomicfile.WriteFunc(r.path, func(w io.Writer) error { return tarDir(ctx, lay, w) }, atomicfile.Mode(0o644))
}

func tarDir(ctx context.Context, dir string, w io.Writer) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		h, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			h.Name += "/"
		}
		h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

func readDockerArchive(r localRef) (Artifact, error) {
	if _, err := os.Stat(r.path); err != nil {
		return Artifact{}, fmt.Errorf("reading %s: %w", r, spec.ErrNotFound)
	}
	var tag *name.Tag
	if r.tag != "" {
		t, err := name.NewTag(r.tag)
		if err != nil {
			return Artifact{}, fmt.Errorf("reading %s: %v", r, err)
		}
		tag = &t
	}
	img, err := tarball.ImageFromPath(r.path, tag)
	if err != nil {
		return Artifact{}, fmt.Errorf("reading %s: %w", r, err)
	}
	return Artifact{Image: img}, nil
}

func writeDockerArchive(r localRef, a Artifact) error {
	if a.Index != nil {
		return fmt.Errorf("writing %s: a docker archive holds a single image, not an index: pick one with --platform or use oci-archive: %w", r, spec.ErrUnsupported)
	}
	t := r.tag
	if t == "" {
		t = "coffer/image:latest"
	}
	tag, err := name.NewTag(t)
	if err != nil {
		return fmt.Errorf("writing %s: %v", r, err)
	}
	return atomicfile.WriteFunc(r.path, func(w io.Writer) error { return tarball.Write(tag, a.Image, w) }, atomicfile.Mode(0o644))
}
