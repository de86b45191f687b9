package imagecrypt

import (
	"context"
	"fmt"
	"maps"
	"slices"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coffer-dev/coffer/spec"
)

// Report describes an image's layers and their encryption (layerinfo).
type Report struct {
	Manifests []ManifestReport `json:"manifests"`
}

// ManifestReport describes one image manifest (one platform of an index).
type ManifestReport struct {
	Digest    string        `json:"digest"`
	MediaType string        `json:"mediaType"`
	Platform  *v1.Platform  `json:"platform,omitempty"`
	Layers    []LayerReport `json:"layers"`
}

// LayerReport describes one layer.
type LayerReport struct {
	Index     int            `json:"index"`
	Digest    string         `json:"digest"`
	Size      int64          `json:"size"`
	MediaType string         `json:"mediaType"`
	Encrypted bool           `json:"encrypted"`
	Cipher    string         `json:"cipher,omitempty"`
	Schemes   []SchemeReport `json:"schemes,omitempty"`
}

// SchemeReport lists the recipients of one key-wrapping scheme.
type SchemeReport struct {
	Scheme     string   `json:"scheme"`
	Entries    int      `json:"entries"`
	Recipients []string `json:"recipients,omitempty"`
	Error      string   `json:"error,omitempty"`
}

// Describer returns human-readable recipient lines for one wrapped entry.
type Describer func(scheme string, entry []byte) ([]string, error)

// Inspect reports every manifest of in (every platform of an index).
func Inspect(ctx context.Context, in Artifact, describe Describer) (*Report, error) {
	r := &Report{}
	var walkIndex func(idx v1.ImageIndex) error
	addImage := func(img v1.Image, p *v1.Platform) error {
		mr, err := inspectImage(img, describe)
		if err != nil {
			return err
		}
		mr.Platform = p
		r.Manifests = append(r.Manifests, *mr)
		return nil
	}
	walkIndex = func(idx v1.ImageIndex) error {
		im, err := idx.IndexManifest()
		if err != nil {
			return fmt.Errorf("parsing index: %w", err)
		}
		for _, d := range im.Manifests {
			if err := ctx.Err(); err != nil {
				return err
			}
			switch {
			case d.MediaType.IsIndex():
				sub, err := idx.ImageIndex(d.Digest)
				if err != nil {
					return err
				}
				if err := walkIndex(sub); err != nil {
					return err
				}
			case d.MediaType.IsImage():
				img, err := idx.Image(d.Digest)
				if err != nil {
					return fmt.Errorf("reading manifest %s: %w", d.Digest, err)
				}
				if err := addImage(img, d.Platform); err != nil {
					return err
				}
			}
		}
		return nil
	}
	var err error
	if in.Index != nil {
		err = walkIndex(in.Index)
	} else {
		err = addImage(in.Image, nil)
	}
	return r, err
}

func inspectImage(img v1.Image, describe Describer) (*ManifestReport, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("parsing manifest: %w", err)
	}
	dg, err := img.Digest()
	if err != nil {
		return nil, err
	}
	mr := &ManifestReport{Digest: dg.String(), MediaType: string(m.MediaType), Layers: []LayerReport{}}
	for i, d := range m.Layers {
		lr := LayerReport{Index: i, Digest: d.Digest.String(), Size: d.Size, MediaType: string(d.MediaType)}
		if spec.IsEncrypted(string(d.MediaType)) {
			lr.Encrypted = true
			if pub, err := spec.DecodePublic(d.Annotations[spec.AnnotationPubOpts]); err == nil {
				lr.Cipher = pub.Cipher
			} else {
				lr.Cipher = "invalid: " + err.Error()
			}
			entries, err := spec.KeyAnnotations(d.Annotations)
			if err != nil {
				return nil, fmt.Errorf("layer %d: %w", i, err)
			}
			for _, sch := range slices.Sorted(maps.Keys(entries)) {
				sr := SchemeReport{Scheme: sch, Entries: len(entries[sch])}
				for _, e := range entries[sch] {
					if describe == nil {
						continue
					}
					lines, err := describe(sch, e)
					if err != nil {
						sr.Error = err.Error()
						continue
					}
					sr.Recipients = append(sr.Recipients, lines...)
				}
				lr.Schemes = append(lr.Schemes, sr)
			}
		}
		mr.Layers = append(mr.Layers, lr)
	}
	return mr, nil
}
