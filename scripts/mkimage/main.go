// Command mkimage writes a benchmark image to an OCI layout: one
// uncompressed tar layer holding files of pseudo-random (incompressible)
// data, a config whose diff_id matches, and a tagged manifest.
//
//	go run ./scripts/mkimage -size 1024 -out /tmp/bench/src -tag v1
package main

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"
)

func main() {
	sizeMiB := flag.Int64("size", 1024, "layer payload size in MiB")
	files := flag.Int("files", 8, "number of files the payload is split into")
	out := flag.String("out", "", "OCI layout directory to create")
	tag := flag.String("tag", "v1", "ref.name of the manifest")
	secret := flag.String("secret", "", "if set, also add /secret with this content")
	text := flag.Bool("text", false, "compressible pseudo-text instead of incompressible bytes (gzip shrinks it about 3x, like typical layers)")
	flag.Parse()
	if *out == "" {
		log.Fatal("mkimage: -out is required")
	}
	var src io.Reader = prng{rand.NewChaCha8([32]byte{1, 2, 3})}
	if *text {
		src = newWords(rand.NewChaCha8([32]byte{4, 5, 6}))
	}
	if err := run(*out, *tag, *sizeMiB<<20, *files, *secret, src); err != nil {
		log.Fatalf("mkimage: %v", err)
	}
}

type prng struct{ r *rand.ChaCha8 }

func (p prng) Read(b []byte) (int, error) { return p.r.Read(b) }

// words yields space-separated words drawn from a fixed vocabulary.
type words struct {
	r     *rand.ChaCha8
	vocab [][]byte
	buf   []byte
}

func newWords(r *rand.ChaCha8) *words {
	w := &words{r: r}
	for range 2048 {
		n := 2 + r.Uint64()%10
		b := make([]byte, n)
		for i := range b {
			b[i] = 'a' + byte(r.Uint64()%26)
		}
		w.vocab = append(w.vocab, b)
	}
	return w
}

func (w *words) Read(p []byte) (int, error) {
	for len(w.buf) < len(p) {
		x := w.r.Uint64()
		w.buf = append(w.buf, w.vocab[x%uint64(len(w.vocab))]...)
		if x>>32%12 == 0 {
			w.buf = append(w.buf, '\n')
		} else {
			w.buf = append(w.buf, ' ')
		}
	}
	n := copy(p, w.buf)
	w.buf = w.buf[n:]
	return n, nil
}

func run(dir, tag string, size int64, files int, secret string, src io.Reader) error {
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(blobs, "layer-")
	if err != nil {
		return err
	}
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(tmp, h)}
	tw := tar.NewWriter(cw)
	mt := time.Unix(1700000000, 0)
	if secret != "" {
		if err := tw.WriteHeader(&tar.Header{Name: "secret", Mode: 0o600, Size: int64(len(secret)), ModTime: mt, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		io.WriteString(tw, secret)
	}
	per := size / int64(files)
	for i := range files {
		n := per
		if i == files-1 {
			n = size - per*int64(files-1)
		}
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("data/file%02d.bin", i), Mode: 0o644, Size: n, ModTime: mt, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		if _, err := io.CopyN(tw, src, n); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	layerDigest := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if err := os.Rename(tmp.Name(), filepath.Join(blobs, layerDigest[7:])); err != nil {
		return err
	}
	cfg, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Cmd": []string{"/bin/sh"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	})
	cfgDigest, err := writeBlob(blobs, cfg)
	if err != nil {
		return err
	}
	man, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfgDigest, "size": len(cfg)},
		"layers":        []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layerDigest, "size": cw.n}},
	})
	manDigest, err := writeBlob(blobs, man)
	if err != nil {
		return err
	}
	idx, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests": []any{map[string]any{
			"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manDigest, "size": len(man),
			"annotations": map[string]string{"org.opencontainers.image.ref.name": tag},
		}},
	})
	if err := os.WriteFile(filepath.Join(dir, "index.json"), idx, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
}

func writeBlob(dir string, b []byte) (string, error) {
	s := sha256.Sum256(b)
	d := hex.EncodeToString(s[:])
	return "sha256:" + d, os.WriteFile(filepath.Join(dir, d), b, 0o644)
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
