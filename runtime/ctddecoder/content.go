package ctddecoder

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coffer-dev/coffer/internal/bounded"
	"github.com/coffer-dev/coffer/runtime/tenant"
	"github.com/coffer-dev/coffer/spec"
)

// maxManifest bounds a manifest or config blob read from the content store.
const maxManifest = 4 << 20

// found is a layer descriptor met in a manifest of containerd's content
// store, with the diffID its image config gives that layer (zero if none).
type found struct {
	desc    v1.Descriptor
	diffID  v1.Hash
	chainID string // the layer's chain ID, "" if the config does not give it
}

// lookupLayer finds the descriptors of the layer whose (encrypted) blob
// has digest dg in the manifests of containerd's content store under root
// (containerd's --root, e.g. /var/lib/containerd). containerd hands a
// stream processor no descriptor when its client sends no payload (plain
// `ctr images import|pull`), but the manifest that names the layer is in
// the store, content-addressed: every blob used is re-hashed against its
// name, so what is found is exactly what was pulled.
func lookupLayer(ctx context.Context, root string, dg v1.Hash) ([]found, error) {
	return scanStore(ctx, root, []byte(dg.String()), func(f found) bool { return f.desc.Digest == dg })
}

// layersByChain finds the layers of media type mt whose chain ID is one of
// chains.
func layersByChain(ctx context.Context, root, mt string, chains []string) ([]found, error) {
	return scanStore(ctx, root, []byte(mt), func(f found) bool {
		return string(f.desc.MediaType) == mt && f.chainID != "" && slices.Contains(chains, f.chainID)
	})
}

// scanStore visits every layer of every manifest in the content store whose
// bytes contain needle, keeping those keep accepts.
func scanStore(ctx context.Context, root string, needle []byte, keep func(found) bool) ([]found, error) {
	dir := filepath.Join(root, "io.containerd.content.v1.content", "blobs", "sha256")
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no containerd content store at %s (is --containerd-root containerd's root?): %w", dir, spec.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("containerd content store: %w", err)
	}
	var out []found
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() || info.Size() > maxManifest || info.Size() < int64(len(needle)) {
			continue
		}
		b, err := readSmall(dir, e.Name())
		if err != nil || !bytes.Contains(b, needle) || verify(b, e.Name()) != nil {
			continue
		}
		var m v1.Manifest
		if json.Unmarshal(b, &m) != nil || len(m.Layers) == 0 {
			continue
		}
		var diffIDs []v1.Hash
		if cb, err := readBlob(dir, m.Config.Digest.Hex); err == nil {
			var cfg v1.ConfigFile
			if json.Unmarshal(cb, &cfg) == nil {
				diffIDs = cfg.RootFS.DiffIDs
			}
		}
		var chains []string
		if len(diffIDs) == len(m.Layers) {
			chains = tenant.ChainIDs(diffIDs)
		}
		for i, l := range m.Layers {
			f := found{desc: l}
			if chains != nil {
				f.diffID, f.chainID = diffIDs[i], chains[i]
			}
			if keep(f) {
				out = append(out, f)
			}
		}
	}
	return out, nil
}

// readBlob reads a small blob and checks it against its name.
func readBlob(dir, hexName string) ([]byte, error) {
	b, err := readSmall(dir, hexName)
	if err != nil {
		return nil, err
	}
	return b, verify(b, hexName)
}

func verify(b []byte, hexName string) error {
	sum := sha256.Sum256(b)
	if hex.EncodeToString(sum[:]) != hexName {
		return fmt.Errorf("blob %s does not match its name", hexName)
	}
	return nil
}

func readSmall(dir, hexName string) ([]byte, error) {
	if len(hexName) != 64 {
		return nil, fmt.Errorf("not a sha256 blob name")
	}
	return bounded.ReadFile(filepath.Join(dir, hexName), maxManifest)
}
