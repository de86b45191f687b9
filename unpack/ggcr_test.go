package unpack

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"
)

// TestApplyGGCRImage wires go-containerregistry layers the way coffer pull
// does (Compressed blob, media type from the manifest, diffID from the
// config) and checks every file of every layer arrived.
func TestApplyGGCRImage(t *testing.T) {
	img, err := random.Image(4096, 3)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var layers []Layer
	for i, l := range ls {
		layers = append(layers, Layer{MediaType: string(m.Layers[i].MediaType), Open: l.Compressed, DiffID: cfg.RootFS.DiffIDs[i]})
	}
	s := newSandbox(t)
	if err := Apply(context.Background(), s.rootfs, layers); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	n := 0
	filepath.WalkDir(s.rootfs, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return nil
	})
	if n != 3 {
		t.Errorf("regular files: got %d, want 3 (one per random layer)", n)
	}
	// A wrong diffID in the config fails the whole pull.
	layers[2].DiffID = cfg.RootFS.DiffIDs[0]
	s2 := newSandbox(t)
	if err := Apply(context.Background(), s2.rootfs, layers); err == nil {
		t.Error("Apply with a swapped diffID succeeded")
	}
	s2.noRootfs(t)
}
