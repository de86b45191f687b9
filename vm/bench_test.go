package vm_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/coffer-dev/coffer/internal/testutil"
	"github.com/coffer-dev/coffer/vm"
)

// BenchmarkRun boots the same measured machine with the same busybox
// image, encrypted (attest, fetch the layer keys, decrypt) and plain
// (attest only; no layer key), and reports the time from vm.Run to the
// container's first output and the boot's phases (seconds since Run
// started). Run with -benchtime 1x -count 5: each iteration is a boot.
func BenchmarkRun(b *testing.B) {
	testutil.RequireTool(b, "qemu-system-x86_64")
	testutil.RequireTool(b, "swtpm")
	e := &env{t: b, kernel: kernelDir(b), dir: b.TempDir()}
	e.bin = staticCoffer(b)
	state := filepath.Join(e.dir, "machine")
	refs, err := vm.Measure(b.Context(), vm.WithKernelDir(e.kernel), vm.WithState(state), vm.WithInit(e.bin))
	if err != nil {
		b.Fatal(err)
	}
	e.admin = filepath.Join(e.dir, "admin.key")
	e.must("kbs", "keygen-admin", "--out", e.admin)
	e.kbs = startBroker(b, e.dir, e.admin+".pub", filepath.Join(state, "ek-ca.pem"))
	adm := []string{"--url", e.kbs, "--admin-key", e.admin}
	for _, r := range refs {
		if r.Name != vm.RefAKPublic {
			e.must(append(append([]string{"kbs", "set-reference-value"}, adm...), r.Name, r.Value)...)
		}
	}
	e.must(append([]string{"kbs", "set-resource-policy", "--affirming"}, adm...)...)
	reg := startRegistry(b)
	img := testutil.BusyboxImage(b, testutil.Layer{Files: map[string][]byte{"secret": []byte(secret + "\n")}, Compression: "gzip"})
	lay := filepath.Join(e.dir, "layout")
	p, err := layout.Write(lay, empty.Index)
	if err == nil {
		err = p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "v1"}))
	}
	if err != nil {
		b.Fatal(err)
	}
	images := map[string]string{"encrypted": "docker://" + reg + "/bench/busybox:enc", "plain": "docker://" + reg + "/bench/busybox:plain"}
	e.must("encrypt", "--kbs", e.kbs, "--admin-key", e.admin, "--key-id", "default/image_key/bench", "--insecure", "oci:"+lay+":v1", images["encrypted"])
	ref, _ := name.ParseReference(strings.TrimPrefix(images["plain"], "docker://"), name.Insecure)
	if err := remote.Write(ref, img); err != nil {
		b.Fatal(err)
	}
	for _, kind := range []string{"encrypted", "plain"} {
		b.Run(kind, func(b *testing.B) {
			phases := map[string]time.Duration{}
			var rss float64
			for b.Loop() {
				var out strings.Builder
				code, err := vm.Run(b.Context(), images[kind], []string{"/bin/busybox", "cat", "/secret"},
					vm.WithKernelDir(e.kernel), vm.WithState(state), vm.WithInit(e.bin), vm.WithKBS(e.kbs),
					vm.WithOutput(&out, os.Stderr), vm.WithMarks(func(n string, at time.Duration) { phases[n] = at }),
					vm.WithStats(func(n string, v float64) {
						if n == "maxrss_kib" {
							rss = v
						}
					}))
				if err != nil || code != 0 || strings.TrimSpace(out.String()) != secret {
					b.Fatalf("vm run: %d %v %q", code, err, out.String())
				}
			}
			for _, n := range []string{"init", "kernel", "measured", "attested", "pulled", "started", "output", "exit"} {
				b.ReportMetric(phases[n].Seconds(), n+"-s")
			}
			b.ReportMetric(rss/1024, "guest-maxrss-MiB")
		})
	}
}
