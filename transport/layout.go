package transport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/coffer-dev/coffer/internal/atomicfile"
	"github.com/coffer-dev/coffer/internal/staging"
	"github.com/coffer-dev/coffer/spec"
)

const refName = "org.opencontainers.image.ref.name"

func readLayout(dir, tag string, digest v1.Hash) (Artifact, error) {
	if _, err := os.Stat(filepath.Join(dir, "index.json")); err != nil {
		return Artifact{}, fmt.Errorf("reading oci:%s: not an OCI layout (no index.json): %w", dir, spec.ErrNotFound)
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return Artifact{}, fmt.Errorf("reading oci:%s: %w", dir, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return Artifact{}, fmt.Errorf("reading oci:%s index.json: %w", dir, err)
	}
	var pick *v1.Descriptor
	var tags []string
	for i, d := range im.Manifests {
		t := d.Annotations[refName]
		if t != "" {
			tags = append(tags, t)
		}
		if (tag != "" && t == tag) || (digest != (v1.Hash{}) && d.Digest == digest) {
			pick = &im.Manifests[i]
		}
	}
	if pick == nil {
		switch {
		case digest != (v1.Hash{}):
			return Artifact{}, fmt.Errorf("reading oci:%s: no manifest %s in index.json: %w", dir, digest, spec.ErrNotFound)
		case tag == "" && len(im.Manifests) == 1:
			pick = &im.Manifests[0]
		case tag == "":
			return Artifact{}, fmt.Errorf("reading oci:%s: it holds %d manifests; name one with oci:%s:TAG (tags: %s)", dir, len(im.Manifests), dir, strings.Join(tags, ", "))
		default:
			return Artifact{}, fmt.Errorf("reading oci:%s: no manifest tagged %q (tags: %s): %w", dir, tag, strings.Join(tags, ", "), spec.ErrNotFound)
		}
	}
	if pick.MediaType.IsIndex() {
		sub, err := idx.ImageIndex(pick.Digest)
		if err != nil {
			return Artifact{}, fmt.Errorf("reading oci:%s: %w", dir, err)
		}
		return Artifact{Index: sub}, nil
	}
	if !pick.MediaType.IsImage() {
		return Artifact{}, fmt.Errorf("reading oci:%s: manifest media type %s is not an image or index: %w", dir, pick.MediaType, spec.ErrUnsupported)
	}
	img, err := idx.Image(pick.Digest)
	if err != nil {
		return Artifact{}, fmt.Errorf("reading oci:%s: %w", dir, err)
	}
	return Artifact{Image: img}, nil
}

// writeLayout writes a into the layout at dir under tag. A new layout is
// built next to dir and renamed into place; in an existing one the blobs are
// written first (each through a temp file) and index.json is replaced
// atomically last.
func writeLayout(ctx context.Context, dir, tag string, a Artifact) error {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		parent := filepath.Dir(filepath.Clean(dir))
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return fmt.Errorf("writing oci:%s: %w", dir, err)
		}
		tmp, err := staging.MkdirTemp(parent, ".coffer-layout-") // sweeps what a killed run left
		if err != nil {
			return fmt.Errorf("writing oci:%s: %w", dir, err)
		}
		if err := writeLayoutIn(ctx, tmp, tag, a); err != nil {
			os.RemoveAll(tmp)
			return fmt.Errorf("writing oci:%s: %w", dir, err)
		}
		os.Chmod(tmp, 0o755)
		if err := os.Rename(tmp, dir); err != nil {
			os.RemoveAll(tmp)
			return fmt.Errorf("writing oci:%s: %w", dir, err)
		}
		return nil
	}
	if err := writeLayoutIn(ctx, dir, tag, a); err != nil {
		return fmt.Errorf("writing oci:%s: %w", dir, err)
	}
	return nil
}

func writeLayoutIn(ctx context.Context, dir, tag string, a Artifact) error {
	p, err := layout.FromPath(dir)
	if err != nil {
		if p, err = layout.Write(dir, empty.Index); err != nil {
			return err
		}
	}
	if err := linkStagedBlobs(ctx, dir, a); err != nil {
		return err
	}
	var desc v1.Descriptor
	if a.Index != nil {
		if err := p.WriteIndex(a.Index); err != nil {
			return err
		}
		if desc, err = describe(a.Index); err != nil {
			return err
		}
	} else {
		if err := p.WriteImage(a.Image); err != nil {
			return err
		}
		if desc, err = describe(a.Image); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return updateIndex(dir, tag, desc)
}

type describable interface {
	Digest() (v1.Hash, error)
	Size() (int64, error)
	RawManifest() ([]byte, error)
}

func describe(m describable) (v1.Descriptor, error) {
	var d v1.Descriptor
	raw, err := m.RawManifest()
	if err != nil {
		return d, err
	}
	var head struct {
		MediaType string `json:"mediaType"`
	}
	json.Unmarshal(raw, &head)
	d.MediaType = typesMediaType(head.MediaType)
	if head.MediaType == "" {
		// mediaType is optional in an OCI manifest or index (umoci, for
		// one, leaves it out); the image spec's types are then the ones
		// meant. Without this the index entry would have none, and the
		// layout could not be read back.
		var probe struct {
			Manifests json.RawMessage `json:"manifests"`
		}
		json.Unmarshal(raw, &probe)
		d.MediaType = types.OCIManifestSchema1
		if probe.Manifests != nil {
			d.MediaType = types.OCIImageIndex
		}
	}
	if d.Digest, err = m.Digest(); err != nil {
		return d, err
	}
	d.Size, err = m.Size()
	return d, err
}

// updateIndex replaces the index.json entry carrying tag (or, for no tag,
// the untagged entries) with desc, atomically.
func updateIndex(dir, tag string, desc v1.Descriptor) error {
	path := filepath.Join(dir, "index.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var im v1.IndexManifest
	if err := json.Unmarshal(raw, &im); err != nil {
		return fmt.Errorf("parsing index.json: %w", err)
	}
	im.Manifests = slices.DeleteFunc(im.Manifests, func(d v1.Descriptor) bool { return d.Annotations[refName] == tag })
	if tag != "" {
		desc.Annotations = map[string]string{refName: tag}
	}
	im.Manifests = append(im.Manifests, desc)
	if im.SchemaVersion == 0 {
		im.SchemaVersion = 2
	}
	out, err := json.Marshal(im)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, out, atomicfile.Mode(0o644))
}

// blobFiler is implemented by layers whose blob already sits in a local file
// (imagecrypt's staged layers, created 0600; an unnamed O_TMPFILE one is
// named by its /proc/self/fd link, which linkFollow resolves). The file belongs to the caller:
// writers may hard-link it and make it 0644 (a blob's mode), never move or
// change its contents.
type blobFiler interface {
	BlobFile() (path string, ok bool)
}

// linkStagedBlobs hard-links staged layer files into blobs/sha256 so that
// the layout writer, which skips blobs already present with the right size,
// does not copy them again. Falls back silently (the writer copies).
func linkStagedBlobs(ctx context.Context, dir string, a Artifact) error {
	var imgs []v1.Image
	if a.Image != nil {
		imgs = append(imgs, a.Image)
	} else if err := collectImages(a.Index, &imgs); err != nil {
		return err
	}
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return err
	}
	for _, img := range imgs {
		ls, err := img.Layers()
		if err != nil {
			return err
		}
		for _, l := range ls {
			if err := ctx.Err(); err != nil {
				return err
			}
			bf, ok := l.(blobFiler)
			if !ok {
				continue
			}
			src, ok := bf.BlobFile()
			if !ok {
				continue
			}
			d, err := l.Digest()
			if err != nil {
				continue
			}
			dst := filepath.Join(blobs, d.Hex)
			if _, err := os.Stat(dst); err == nil {
				continue
			}
			// A link shares the caller's inode: the blob gets the usual 0644
			// mode, which the staged file then shares. On failure the layout
			// writer copies.
			if err := linkFollow(src, dst); err == nil {
				_ = os.Chmod(dst, 0o644)
			}

		}
	}
	return nil
}

func collectImages(idx v1.ImageIndex, out *[]v1.Image) error {
	im, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	for _, d := range im.Manifests {
		switch {
		case d.MediaType.IsIndex():
			sub, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return err
			}
			if err := collectImages(sub, out); err != nil {
				return err
			}
		case d.MediaType.IsImage():
			img, err := idx.Image(d.Digest)
			if err != nil {
				return err
			}
			*out = append(*out, img)
		}
	}
	return nil
}
