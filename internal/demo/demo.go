// Package demo prepares what `coffer demo` needs on embedded defaults: a
// small image holding a secret and an in-process key broker on loopback.
package demo

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/coffer-dev/coffer/internal/kbsfiles"
	"github.com/coffer-dev/coffer/kbs/server"
)

// Secret is the content of /secret in the demo image.
const Secret = "the model weights are 42"

// WriteImage writes a two-layer OCI image (gzip layers; /secret, /app/run)
// to the layout dir under tag.
func WriteImage(dir, tag string) error {
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	for _, files := range []map[string]string{
		{"secret": Secret + "\n"},
		{"app/run": "#!/bin/sh\ncat /secret\n"},
	} {
		l, err := gzipLayer(files)
		if err != nil {
			return err
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			return err
		}
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg.OS, cfg.Architecture = "linux", "amd64"
	cfg.Config.Cmd = []string{"/app/run"}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	return p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag}))
}

func gzipLayer(files map[string]string) (v1.Layer, error) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for name, body := range files {
		mode := int64(0o644)
		if filepath.Base(name) == "run" || filepath.Dir(name) == "bin" {
			mode = 0o755
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(body)), Typeflag: tar.TypeReg, ModTime: time.Unix(1700000000, 0)}); err != nil {
			return nil, err
		}
		io.WriteString(tw, body)
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := b.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

// Broker is a key broker serving on loopback until its context ends.
type Broker struct {
	URL  string
	done chan error
}

// StartBroker starts coffer's broker on 127.0.0.1 (a free port) with a
// filesystem repository under dir and the given admin public key file. Its
// token key is dir/broker-token.pem; the public part, which SecL hosts pin
// (wla --broker-key), is dir/broker-token.pub.
func StartBroker(ctx context.Context, dir, adminPub string) (*Broker, error) {
	return startBroker(ctx, dir, adminPub, func(*server.Config) {})
}

func startBroker(ctx context.Context, dir, adminPub string, set func(*server.Config)) (*Broker, error) {
	cfg := server.DefaultConfig()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	pub, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	cfg.TokenKey = filepath.Join(dir, "broker-token.pem")
	if err := os.WriteFile(cfg.TokenKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "broker-token.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
		return nil, err
	}
	cfg.AllowSampleTee = true // the demo has no TEE: it attests as the sample TEE
	cfg.Listen = "127.0.0.1:0"
	cfg.Repository = filepath.Join(dir, "repository")
	cfg.AdminPublicKeys = []string{adminPub}
	set(&cfg)
	ready := make(chan net.Addr, 1)
	b := &Broker{done: make(chan error, 1)}
	files, err := kbsfiles.Read(cfg)
	if err != nil {
		return nil, err
	}
	go func() {
		b.done <- server.Serve(ctx, cfg, files, slog.New(slog.DiscardHandler), func(a net.Addr) { ready <- a })
	}()
	select {
	case a := <-ready:
		b.URL = "http://" + a.String()
		return b, nil
	case err := <-b.done:
		return nil, fmt.Errorf("starting the demo broker: %w", err)
	case <-time.After(10 * time.Second):
		return nil, fmt.Errorf("starting the demo broker: timed out")
	}
}

// Wait returns once the broker stopped.
func (b *Broker) Wait() error { return <-b.done }

// WriteRSAKeys writes a fresh RSA-2048 key pair: priv (PKCS#8 PEM, 0600)
// and pub (PKIX PEM).
func WriteRSAKeys(priv, pub string) error {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return err
	}
	if err := os.WriteFile(priv, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return err
	}
	pder, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return err
	}
	return os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pder}), 0o644)
}
