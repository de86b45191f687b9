package vm_test

import (
	crand "crypto/rand"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	cttrpc "github.com/containerd/ttrpc"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/coffer-dev/coffer/agent/ttrpc/gen/cdh"
	"github.com/coffer-dev/coffer/agent/ttrpc/gen/kata"
	"github.com/coffer-dev/coffer/internal/testutil"
	"github.com/coffer-dev/coffer/vm"
)

// BenchmarkRun boots the same measured machine with the same busybox
// image, encrypted (attest, fetch the layer keys, decrypt) and plain
// (attest only; no layer key), and reports the time from vm.Run to the
// container's first output and the boot's phases (seconds since Run
// started). Run with -benchtime 1x -count 5: each iteration is a boot.
func BenchmarkRun(b *testing.B) {
	e, state := benchMachine(b)
	reg := startRegistry(b)
	img := testutil.BusyboxImage(b, testutil.Layer{Files: map[string][]byte{"secret": []byte(secret + "\n")}, Compression: "gzip"})
	images := map[string]string{"encrypted": "docker://" + reg + "/bench/busybox:enc", "plain": "docker://" + reg + "/bench/busybox:plain"}
	e.push(img, images["encrypted"], true)
	e.push(img, images["plain"], false)
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

// BenchmarkLargeLayer pulls an encrypted image with one incompressible
// layer of $COFFER_VM_BENCH_LAYER_MIB MiB (default 512) in a 3 GiB guest (the
// staged layer and the rootfs are both in tmpfs)
// and reports the guest coffer's peak RSS and the pull's duration.
func BenchmarkLargeLayer(b *testing.B) {
	mib := 512
	if v, err := strconv.Atoi(os.Getenv("COFFER_VM_BENCH_LAYER_MIB")); err == nil && v > 0 {
		mib = v
	}
	// SeaBIOS measures the SMBIOS tables, memory size included, into
	// PCR 1: measure with the memory the run uses.
	e, state := benchMachine(b, vm.WithMemory(3072))
	reg := startRegistry(b)
	big := make([]byte, mib<<20)
	crand.Read(big)
	img := testutil.BusyboxImage(b, testutil.Layer{Files: map[string][]byte{"big": big}, Compression: ""})
	big = nil
	image := "docker://" + reg + "/bench/large:enc"
	e.push(img, image, true)
	var rss float64
	phases := map[string]time.Duration{}
	for b.Loop() {
		code, err := vm.Run(b.Context(), image, []string{"/bin/busybox", "stat", "-c", "%s", "/big"},
			vm.WithKernelDir(e.kernel), vm.WithState(state), vm.WithInit(e.bin), vm.WithKBS(e.kbs), vm.WithMemory(3072),
			vm.WithOutput(os.Stderr, os.Stderr), vm.WithMarks(func(n string, at time.Duration) { phases[n] = at }),
			vm.WithStats(func(n string, v float64) {
				if n == "maxrss_kib" {
					rss = v
				}
			}))
		if err != nil || code != 0 {
			b.Fatalf("vm run: %d %v", code, err)
		}
	}
	b.ReportMetric(rss/1024, "guest-maxrss-MiB")
	b.ReportMetric((phases["pulled"] - phases["attested"]).Seconds(), "pull-s")
}

// benchMachine builds coffer, measures a machine and starts a broker
// that trusts it, with its reference values and an affirming-only
// resource policy.
func benchMachine(b testing.TB, opts ...vm.Option) (*env, string) {
	testutil.RequireTool(b, "qemu-system-x86_64")
	testutil.RequireTool(b, "swtpm")
	e := &env{t: b, kernel: kernelDir(b), dir: b.TempDir()}
	e.bin = testutil.StaticCoffer(b)
	state := filepath.Join(e.dir, "machine")
	refs, err := vm.Measure(b.Context(), append([]vm.Option{vm.WithKernelDir(e.kernel), vm.WithState(state), vm.WithInit(e.bin)}, opts...)...)
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
	return e, state
}

// push writes img to the registry reference image, encrypted for the
// broker's key (coffer encrypt --kbs) or as it is.
func (e *env) push(img v1.Image, image string, encrypt bool) {
	if !encrypt {
		ref, _ := name.ParseReference(strings.TrimPrefix(image, "docker://"), name.Insecure)
		if err := remote.Write(ref, img); err != nil {
			e.t.Fatal(err)
		}
		return
	}
	lay := filepath.Join(e.dir, "layout-"+strconv.Itoa(rand.Int()))
	p, err := layout.Write(lay, empty.Index)
	if err == nil {
		err = p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "v1"}))
	}
	if err != nil {
		e.t.Fatal(err)
	}
	e.must("encrypt", "--kbs", e.kbs, "--admin-key", e.admin, "--key-id", "default/image_key/bench", "--insecure", "oci:"+lay+":v1", image)
}

// BenchmarkAgentLargeLayer is BenchmarkLargeLayer through the agent mode:
// one vm.Start guest (3 GiB) pulls an encrypted image with one
// incompressible layer of $COFFER_VM_BENCH_LAYER_MIB MiB (default 512) with
// CDH PullImage over the virtio-serial ttrpc connection, once per
// iteration into a new bundle, and reports the guest coffer's peak RSS
// after the pulls (target: at most 64 MiB) and the seconds per pull.
func BenchmarkAgentLargeLayer(b *testing.B) {
	mib := 512
	if v, err := strconv.Atoi(os.Getenv("COFFER_VM_BENCH_LAYER_MIB")); err == nil && v > 0 {
		mib = v
	}
	e, state := benchMachine(b, vm.WithMemory(3072))
	reg := startRegistry(b)
	big := make([]byte, mib<<20)
	crand.Read(big)
	img := testutil.BusyboxImage(b, testutil.Layer{Files: map[string][]byte{"big": big}, Compression: ""})
	big = nil
	image := "docker://" + reg + "/bench/large:enc"
	e.push(img, image, true)
	var rss float64
	m, err := vm.Start(b.Context(), vm.WithKernelDir(e.kernel), vm.WithState(state), vm.WithInit(e.bin), vm.WithKBS(e.kbs),
		vm.WithMemory(3072), vm.WithForward(reg), vm.WithStats(func(n string, v float64) {
			if n == "maxrss_kib" {
				rss = v
			}
		}))
	if err != nil {
		b.Fatal(err)
	}
	defer m.Stop(b.Context())
	conn, err := m.Dial(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	tc := cttrpc.NewClient(conn)
	defer tc.Close()
	pc := cdh.NewImagePullServiceClient(tc)
	ag := kata.NewAgentServiceClient(tc)
	n := 0
	start := time.Now()
	for b.Loop() {
		n++
		id := "big" + strconv.Itoa(n)
		if _, err := pc.PullImage(b.Context(), &cdh.ImagePullRequest{ImageUrl: strings.TrimPrefix(image, "docker://"), BundlePath: "/run/kata-containers/" + id}); err != nil {
			b.Fatalf("PullImage: %v", err)
		}
		// The layer is there, whole: stat it in a container.
		spec := &kata.Spec{Process: &kata.Process{Args: []string{"/bin/busybox", "stat", "-c", "%s", "/big"}}}
		if _, err := ag.CreateContainer(b.Context(), &kata.CreateContainerRequest{ContainerId: id, OCI: spec}); err != nil {
			b.Fatal(err)
		}
		if _, err := ag.StartContainer(b.Context(), &kata.StartContainerRequest{ContainerId: id}); err != nil {
			b.Fatal(err)
		}
		out, _ := ag.ReadStdout(b.Context(), &kata.ReadStreamRequest{ContainerId: id})
		if st, err := ag.WaitProcess(b.Context(), &kata.WaitProcessRequest{ContainerId: id}); err != nil || st.Status != 0 || out == nil || strings.TrimSpace(string(out.Data)) != strconv.Itoa(mib<<20) {
			b.Fatalf("stat /big: %v %v %q", st, err, out)
		}
		ag.RemoveContainer(b.Context(), &kata.RemoveContainerRequest{ContainerId: id})
	}
	b.ReportMetric(rss/1024, "guest-maxrss-MiB")
	b.ReportMetric(time.Since(start).Seconds()/float64(n), "pull-s")
}
