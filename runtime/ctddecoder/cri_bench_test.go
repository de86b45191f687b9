package ctddecoder_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/coffer-dev/coffer/internal/testutil"
	"github.com/coffer-dev/coffer/runtime/nodecfg"
)

// BenchmarkCRIPullAndStart is issue 23's node-key-model figure: crictl pull
// of a single 256 MiB (incompressible, uncompressed tar) layer image from a
// loopback registry, then runp/create/start of a host-network pod whose
// container hashes the whole layer's file, to the container's exit; the
// plain image vs the same layer encrypted by coffer (node key, coffer
// ctd-decoder). Each run removes its pod and image (CRI GCs the content
// and snapshots synchronously), so the next one pulls and unpacks again.
// Medians of 3:
//
//	go test ./runtime/ctddecoder -run XXX -bench CRIPullAndStart -benchtime 1x -count 3
func BenchmarkCRIPullAndStart(b *testing.B) {
	crictl := testutil.Crictl(b)
	coffer := testutil.BuildCoffer(b)
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	b.Cleanup(reg.Close)
	host := strings.TrimPrefix(reg.URL, "http://")
	keys := b.TempDir()
	pub := ecKey(b, keys, "node.pem")
	c := testutil.StartContainerdCRI(b, func(c *testutil.Containerd) {
		in := nodecfg.Install{Coffer: coffer, KeysPath: keys, ContainerdRoot: c.Root, Socket: c.Address,
			CRI: true, SandboxImage: host + "/pause:1", Mirrors: []string{host}}
		if _, err := nodecfg.InstallContainerd(c.Config, in); err != nil {
			b.Fatal(err)
		}
	})
	n := criNode{Containerd: c, crictl: crictl, keys: keys, registry: host, cfg: filepath.Join(c.Dir, "crictl.yaml")}
	os.WriteFile(n.cfg, []byte("runtime-endpoint: unix://"+c.Address+"\nimage-endpoint: unix://"+c.Address+"\ntimeout: 300\n"), 0o600)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	pause, err := mutate.Config(testutil.BusyboxImage(b), v1.Config{Entrypoint: []string{"/bin/busybox", "sleep", "2147483647"}})
	if err != nil {
		b.Fatal(err)
	}
	push(b, pause, host+"/pause:1")
	big := make([]byte, 256<<20)
	rand.Read(big)
	sum := sha256.Sum256(big)
	img := testutil.BusyboxImage(b, testutil.Layer{Files: map[string][]byte{"big.bin": big}, Compression: ""})
	push(b, img, host+"/bench/plain:1")
	push(b, encrypted(b, img, pub, -1), host+"/bench/enc:1")
	n.must(b, ctx, "pull", host+"/pause:1")
	// snapshots counts k8s.io's snapshots: after rmi the image's layer
	// snapshot must be gone, or the next pull would reuse the plaintext
	// (the plain and the encrypted layer share a chain ID) and skip the
	// decoder.
	snapshots := func() int {
		out, err := c.Ctr(ctx, "k8s.io", "snapshots", "--snapshotter", "overlayfs", "ls")
		if err != nil {
			b.Fatalf("ctr snapshots ls: %v\n%s", err, out)
		}
		return strings.Count(out, "\n")
	}
	base := snapshots()
	once := func(ref string) time.Duration {
		start := time.Now()
		n.must(b, ctx, "pull", ref)
		out, _, pod := n.runPod(b, ctx, "bench", true, ref, "/bin/busybox", "sha256sum", "/big.bin")
		d := time.Since(start)
		if want := hex.EncodeToString(sum[:]) + "  /big.bin"; out != want {
			b.Fatalf("container printed %q, want %q", out, want)
		}
		n.must(b, ctx, "rmp", "-f", pod)
		n.must(b, ctx, "rmi", ref)
		for deadline := time.Now().Add(30 * time.Second); snapshots() != base; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatalf("%s: its snapshots are still there after rmi", ref)
			}
		}
		return d
	}
	// One op = the plain image then the encrypted one (A/B alternating, as
	// this shared VM's page-cache and load swings demand); the metrics are
	// each run's seconds and their ratio.
	var plain, enc time.Duration
	for range b.N {
		plain += once(host + "/bench/plain:1")
		enc += once(host + "/bench/enc:1")
	}
	b.ReportMetric(plain.Seconds()/float64(b.N), "plain-s")
	b.ReportMetric(enc.Seconds()/float64(b.N), "encrypted-s")
	b.ReportMetric(float64(enc)/float64(plain), "ratio")
}
