package imagecrypt

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"

	"github.com/coffer-dev/coffer/spec"
)

// Artifact is an image or an index: exactly one field is set. It has the
// same shape as transport.Artifact, so the two convert directly.
type Artifact struct {
	Image v1.Image
	Index v1.ImageIndex
}

// Result is a processed artifact. Its changed layers are staged in temp
// files that stay valid until Close.
type Result struct {
	Artifact
	// Layers counts the layer descriptors that changed.
	Layers int
	s      *session
}

// Close removes the staged layer files.
func (r *Result) Close() error { return r.s.cleanup() }

// layerFunc transforms one selected layer. It returns the new descriptor and
// the new blob (nil when the blob is unchanged), or changed=false.
type layerFunc func(ctx context.Context, i int, desc v1.Descriptor, l v1.Layer, diffID v1.Hash) (nd v1.Descriptor, nl v1.Layer, changed bool, err error)

type session struct {
	o     *options
	mu    sync.Mutex
	files []*stagedFile
	fn    layerFunc
	// convertDocker converts Docker schema 2 manifests to OCI first.
	convertDocker bool
}

// tempFile stages one layer blob, open for reading back until cleanup.
// Where the file system has O_TMPFILE the file has no name: a run that is
// killed (what is staged may be plaintext) leaves nothing behind. Elsewhere
// it is a named file in the staging directory, removed by cleanup (or, after
// a kill, by the next run's sweep of its directory).
func (s *session) tempFile() (*stagedFile, error) {
	sf := &stagedFile{}
	f, err := openUnnamed(s.o.tempDir)
	if err != nil {
		if f, err = os.CreateTemp(s.o.tempDir, "coffer-layer-*"); err != nil {
			return nil, fmt.Errorf("staging layer: %w", err)
		}
		sf.named = true
	}
	sf.File = f
	s.mu.Lock()
	s.files = append(s.files, sf)
	s.mu.Unlock()
	return sf, nil
}

// stagedFile is a staged layer blob; named when O_TMPFILE was not available.
type stagedFile struct {
	*os.File
	named bool
}

// path names the file for a writer that links it into place: its own name,
// or its /proc/self/fd link (linkat with AT_SYMLINK_FOLLOW gives an
// O_TMPFILE file a name).
func (f *stagedFile) path() string {
	if f.named {
		return f.Name()
	}
	return fmt.Sprintf("/proc/self/fd/%d", f.Fd())
}

func (s *session) cleanup() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, f := range s.files {
		f.Close()
		if !f.named {
			continue
		}
		if err := os.Remove(f.Name()); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	s.files = nil
	return errors.Join(errs...)
}

func (s *session) run(ctx context.Context, in Artifact) (*Result, error) {
	r := &Result{s: s}
	var err error
	switch {
	case in.Image != nil && in.Index == nil:
		r.Image, r.Layers, err = s.image(ctx, in.Image)
	case in.Index != nil && in.Image == nil:
		r.Index, r.Layers, err = s.index(ctx, in.Index)
	default:
		err = errors.New("internal: artifact must hold exactly one of image or index")
	}
	if err != nil {
		s.cleanup()
		return nil, err
	}
	return r, nil
}

func (s *session) index(ctx context.Context, idx v1.ImageIndex) (v1.ImageIndex, int, error) {
	raw, err := idx.RawManifest()
	if err != nil {
		return nil, 0, fmt.Errorf("reading index: %w", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, 0, fmt.Errorf("parsing index: %w", err)
	}
	items, err := rawArray(raw, "manifests")
	if err != nil {
		return nil, 0, err
	}
	if len(items) != len(im.Manifests) {
		return nil, 0, errors.New("index manifests do not parse consistently")
	}
	out := &index{base: idx, children: map[v1.Hash]any{}}
	total, converted := 0, false
	for i, d := range im.Manifests {
		var child interface {
			Digest() (v1.Hash, error)
			Size() (int64, error)
			MediaType() (types.MediaType, error)
		}
		n := 0
		switch {
		case d.MediaType.IsIndex():
			sub, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return nil, 0, fmt.Errorf("reading nested index %s: %w", d.Digest, err)
			}
			var nsub v1.ImageIndex
			if nsub, n, err = s.index(ctx, sub); err != nil {
				return nil, 0, err
			}
			child = nsub
		case d.MediaType.IsImage() && s.o.platformSelected(d.Platform):
			img, err := idx.Image(d.Digest)
			if err != nil {
				return nil, 0, fmt.Errorf("reading manifest %s: %w", d.Digest, err)
			}
			var nimg v1.Image
			if nimg, n, err = s.image(ctx, img); err != nil {
				if d.Platform != nil {
					return nil, 0, fmt.Errorf("platform %s: %w", d.Platform, err)
				}
				return nil, 0, err
			}
			child = nimg
		default:
			continue
		}
		nd, err := child.Digest()
		if err != nil {
			return nil, 0, err
		}
		if nd == d.Digest {
			continue
		}
		total += n
		out.children[nd] = child
		d.Digest = nd
		if d.Size, err = child.Size(); err != nil {
			return nil, 0, err
		}
		mt, err := child.MediaType()
		if err != nil {
			return nil, 0, err
		}
		converted = converted || mt != d.MediaType
		d.MediaType = mt
		if items[i], err = json.Marshal(d); err != nil {
			return nil, 0, err
		}
	}
	if len(out.children) == 0 {
		return idx, 0, nil
	}
	if out.raw, err = spliceTopLevel(raw, "manifests", joinArray(items)); err != nil {
		return nil, 0, err
	}
	out.mt = im.MediaType
	if converted && out.mt == types.DockerManifestList {
		out.mt = types.OCIImageIndex
		if out.raw, err = spliceTopLevel(out.raw, "mediaType", []byte(`"`+types.OCIImageIndex+`"`)); err != nil {
			return nil, 0, err
		}
	}
	return out, total, nil
}

func (s *session) image(ctx context.Context, img v1.Image) (v1.Image, int, error) {
	raw, err := img.RawManifest()
	if err != nil {
		return nil, 0, fmt.Errorf("reading manifest: %w", err)
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, 0, fmt.Errorf("parsing manifest: %w", err)
	}
	cfgRaw, err := img.RawConfigFile()
	if err != nil {
		return nil, 0, fmt.Errorf("reading config: %w", err)
	}
	var cfg v1.ConfigFile
	if err := json.Unmarshal(cfgRaw, &cfg); err != nil {
		return nil, 0, fmt.Errorf("parsing image config: %w", err)
	}
	mt := m.MediaType
	if mt == "" {
		if mt, err = img.MediaType(); err != nil {
			return nil, 0, err
		}
	}
	converted := false
	if mt == types.DockerManifestSchema2 && s.convertDocker {
		if raw, err = dockerToOCI(m); err != nil {
			return nil, 0, err
		}
		if m, err = v1.ParseManifest(bytes.NewReader(raw)); err != nil {
			return nil, 0, err
		}
		mt, converted = types.OCIManifestSchema1, true
	}
	sel, err := s.o.selected(len(m.Layers))
	if err != nil {
		return nil, 0, err
	}
	items, err := rawArray(raw, "layers")
	if err != nil {
		return nil, 0, err
	}
	out := &image{base: img, mt: mt, cfg: cfgRaw, layers: map[v1.Hash]v1.Layer{}}
	var mu sync.Mutex
	changed := 0
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.o.jobs)
	for i, d := range m.Layers {
		if !sel[i] {
			continue
		}
		var diffID v1.Hash
		if i < len(cfg.RootFS.DiffIDs) {
			diffID = cfg.RootFS.DiffIDs[i]
		}
		g.Go(func() error {
			l, err := img.LayerByDigest(d.Digest)
			if err != nil {
				return fmt.Errorf("layer %d (%s): %w", i, d.Digest, err)
			}
			nd, nl, ok, err := s.fn(gctx, i, d, l, diffID)
			if err != nil {
				return fmt.Errorf("layer %d (%s): %w", i, d.Digest, err)
			}
			if !ok {
				return nil
			}
			b, err := json.Marshal(nd)
			if err != nil {
				return err
			}
			if s.o.progress != nil {
				s.o.progress(Progress{Digest: nd.Digest, Bytes: nd.Size})
			}
			mu.Lock()
			defer mu.Unlock()
			items[i] = b
			if nl != nil {
				out.layers[nd.Digest] = nl
			}
			changed++
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, 0, err
	}
	if changed == 0 && !converted {
		return img, 0, nil
	}
	if out.raw, err = spliceTopLevel(raw, "layers", joinArray(items)); err != nil {
		return nil, 0, err
	}
	return out, changed, nil
}

// dockerToOCI rewrites a Docker schema 2 manifest as an OCI manifest: the
// only form that can carry encrypted layers.
func dockerToOCI(m *v1.Manifest) ([]byte, error) {
	n := *m
	n.MediaType = types.OCIManifestSchema1
	n.Config.MediaType = types.OCIConfigJSON
	n.Layers = make([]v1.Descriptor, len(m.Layers))
	for i, d := range m.Layers {
		switch d.MediaType {
		case types.DockerLayer:
			d.MediaType = types.OCILayer
		case types.DockerForeignLayer:
			d.MediaType = types.OCIRestrictedLayer
		case types.DockerUncompressedLayer:
			d.MediaType = types.OCIUncompressedLayer
		}
		n.Layers[i] = d
	}
	return json.Marshal(n)
}

// image is a manifest coffer rewrote, over the image it came from. It
// implements v1.Image itself (rather than through partial) so that its
// staged layers reach writers unwrapped, BlobFile included.
type image struct {
	base   v1.Image
	raw    []byte
	mt     types.MediaType
	cfg    []byte
	layers map[v1.Hash]v1.Layer
}

var _ v1.Image = (*image)(nil)

func (i *image) RawManifest() ([]byte, error)        { return i.raw, nil }
func (i *image) RawConfigFile() ([]byte, error)      { return i.cfg, nil }
func (i *image) MediaType() (types.MediaType, error) { return i.mt, nil }
func (i *image) Size() (int64, error)                { return int64(len(i.raw)), nil }
func (i *image) Digest() (v1.Hash, error)            { return sha256Hash(i.raw), nil }
func (i *image) ConfigName() (v1.Hash, error)        { return sha256Hash(i.cfg), nil }
func (i *image) Manifest() (*v1.Manifest, error)     { return v1.ParseManifest(bytes.NewReader(i.raw)) }
func (i *image) ConfigFile() (*v1.ConfigFile, error) {
	return v1.ParseConfigFile(bytes.NewReader(i.cfg))
}

func (i *image) Layers() ([]v1.Layer, error) {
	m, err := i.Manifest()
	if err != nil {
		return nil, err
	}
	ls := make([]v1.Layer, len(m.Layers))
	for j, d := range m.Layers {
		if ls[j], err = i.LayerByDigest(d.Digest); err != nil {
			return nil, err
		}
	}
	return ls, nil
}

func (i *image) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	if l, ok := i.layers[h]; ok {
		return l, nil
	}
	if h == sha256Hash(i.cfg) {
		return partial.ConfigLayer(i)
	}
	return i.base.LayerByDigest(h)
}

func (i *image) LayerByDiffID(h v1.Hash) (v1.Layer, error) {
	cfg, err := i.ConfigFile()
	if err != nil {
		return nil, err
	}
	m, err := i.Manifest()
	if err != nil {
		return nil, err
	}
	for j, d := range cfg.RootFS.DiffIDs {
		if d == h && j < len(m.Layers) {
			return i.LayerByDigest(m.Layers[j].Digest)
		}
	}
	return nil, fmt.Errorf("no layer with diff_id %s: %w", h, spec.ErrNotFound)
}

// index is an index coffer rewrote.
type index struct {
	base     v1.ImageIndex
	raw      []byte
	mt       types.MediaType
	children map[v1.Hash]any
}

func (x *index) MediaType() (types.MediaType, error) { return x.mt, nil }
func (x *index) RawManifest() ([]byte, error)        { return x.raw, nil }
func (x *index) Size() (int64, error)                { return int64(len(x.raw)), nil }
func (x *index) Digest() (v1.Hash, error)            { return sha256Hash(x.raw), nil }
func (x *index) IndexManifest() (*v1.IndexManifest, error) {
	return v1.ParseIndexManifest(bytes.NewReader(x.raw))
}
func (x *index) Image(h v1.Hash) (v1.Image, error) {
	if c, ok := x.children[h].(v1.Image); ok {
		return c, nil
	}
	return x.base.Image(h)
}
func (x *index) ImageIndex(h v1.Hash) (v1.ImageIndex, error) {
	if c, ok := x.children[h].(v1.ImageIndex); ok {
		return c, nil
	}
	return x.base.ImageIndex(h)
}

func sha256Hash(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

// fileLayer is a layer blob staged in a local file.
type fileLayer struct {
	f      *stagedFile
	digest v1.Hash
	diffID v1.Hash
	size   int64
	mt     types.MediaType
}

func (l *fileLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *fileLayer) Size() (int64, error)                { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error) { return l.mt, nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(io.NewSectionReader(l.f, 0, l.size)), nil
}
func (l *fileLayer) Uncompressed() (io.ReadCloser, error) {
	return nil, fmt.Errorf("layer %s: uncompressed access is not provided: %w", l.digest, spec.ErrUnsupported)
}

// BlobFile names the file holding exactly this layer's blob, so a writer may
// link it into place instead of copying it.
func (l *fileLayer) BlobFile() (string, bool) { return l.f.path(), true }
