package imagecrypt

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/coffer-dev/coffer/internal/staging"
	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/transport"
)

// Transform is one of Encrypt, Decrypt or Rekey bound to its recipients,
// as Copy applies it.
type Transform func(ctx context.Context, in Artifact, opts ...Option) (*Result, error)

// EncryptFor binds Encrypt to its recipients; RekeyFor binds Rekey.
func EncryptFor(w ...keywrap.Wrapper) Transform {
	return func(ctx context.Context, in Artifact, opts ...Option) (*Result, error) {
		return Encrypt(ctx, in, w, opts...)
	}
}

// RekeyFor binds Rekey to the new recipient set.
func RekeyFor(w ...keywrap.Wrapper) Transform {
	return func(ctx context.Context, in Artifact, opts ...Option) (*Result, error) {
		return Rekey(ctx, in, w, opts...)
	}
}

// Copy reads src, applies t and writes dst: what coffer encrypt, decrypt and
// rekey do. Layers are staged in a directory next to dst when dst is local
// (so the writer hard-links them into place: each layer is written once),
// else in the system temp dir; the staging goes when Copy returns. A source
// that verifies blobs as it is read (a registry) is not hashed again, and a
// registry's encrypted blobs are authenticated by their HMAC alone. topts
// configure both ends (credentials, TLS). It returns how many layers changed;
// on any error nothing is written at dst.
func Copy(ctx context.Context, src, dst transport.Reference, t Transform, topts []transport.Option, opts ...Option) (int, error) {
	stage, err := staging.MkdirTemp(stageDir(dst), ".coffer-stage-") // sweeps what a killed run left
	if err != nil {
		return 0, fmt.Errorf("creating staging directory: %w", err)
	}
	defer os.RemoveAll(stage)
	in, closeSrc, err := transport.Read(ctx, src, topts...)
	if err != nil {
		return 0, err
	}
	defer closeSrc()
	all := append([]Option{WithTempDir(stage)}, opts...)
	if src.ContentVerified() {
		all = append(all, WithTrustedSource(true))
	}
	raw, err := transport.UnverifiedBlobs(src, topts...)
	if err != nil {
		return 0, err
	}
	if raw != nil {
		all = append(all, WithUnverifiedBlobs(raw))
	}
	res, err := t(ctx, Artifact(in), all...)
	if err != nil {
		return 0, err
	}
	defer res.Close()
	if err := transport.Write(ctx, dst, transport.Artifact(res.Artifact), topts...); err != nil {
		return 0, err
	}
	return res.Layers, nil
}

// stageDir is the directory holding a local destination, if it exists, else
// the system temp dir.
func stageDir(ref transport.Reference) string {
	if p := ref.LocalPath(); p != "" {
		dir := filepath.Dir(filepath.Clean(p))
		if st, err := os.Stat(dir); err == nil && st.IsDir() {
			return dir
		}
	}
	return os.TempDir()
}
