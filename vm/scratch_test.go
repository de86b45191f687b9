package vm_test

import (
	"bytes"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/coffer-dev/coffer/agent/securemount"
	"github.com/coffer-dev/coffer/internal/testutil"
	"github.com/coffer-dev/coffer/vm"
)

// TestScratchDisk boots four guests with the same scratch disk image
// (QEMU TCG, the broker releasing to any attested guest whose EK the
// machine's CA certified; no measure boot): the first formats the disk
// as LUKS2 with the broker's key, unpacks the encrypted image onto it and
// runs it from there (the container's root is ext4, not tmpfs), and the
// image file holds a LUKS header and not the secret in clear; the second
// reopens the disk with the same key and runs the image again; the third
// does the first's work on a disk formatted with dm-integrity tags; then
// the broker holds another key, and the fourth guest fails clearly (exit 3,
// "the key does not open the LUKS2 device") without running anything.
func TestScratchDisk(t *testing.T) {
	e, state, setKey := scratchEnv(t)
	setKey()

	reg := startRegistry(t)
	img := testutil.BusyboxImage(t, testutil.Layer{Files: map[string][]byte{"secret": []byte(secret + "\n")}, Compression: "gzip"})
	lay := filepath.Join(e.dir, "layout")
	p, err := layout.Write(lay, empty.Index)
	if err == nil {
		err = p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "v1"}))
	}
	if err != nil {
		t.Fatal(err)
	}
	e.image = "docker://" + reg + "/coffer/busybox:enc"
	e.must("encrypt", "--kbs", e.kbs, "--admin-key", e.admin, "--key-id", "default/image_key/busybox", "--insecure", "oci:"+lay+":v1", e.image)

	disk := filepath.Join(e.dir, "scratch.img")
	run := func() (string, string, int) {
		return e.coffer("vm", "run", "--kernel-dir", e.kernel, "--state", state, "--kbs", e.kbs, "--init", e.bin,
			"--scratch-disk", disk+":256M", "--scratch-key-id", "default/disk/scratch", e.image,
			"--", "/bin/busybox", "sh", "-c", "/bin/busybox cat /secret; /bin/busybox stat -f -c %T /")
	}
	start := time.Now()
	out, errs, code := run()
	t.Logf("boot with the broker's key: %v", time.Since(start))
	if code != 0 || !strings.Contains(out, secret) || !strings.Contains(out, "ext2/ext3") {
		t.Fatalf("vm run with a scratch disk: exit %d, stdout %q (want the secret and an ext4 root), stderr %s", code, out, errs)
	}
	raw, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	if !securemount.HasLUKSHeader(disk) || bytes.Contains(raw, []byte(secret)) {
		t.Fatalf("the disk image: LUKS header %v, secret in clear %v", securemount.HasLUKSHeader(disk), bytes.Contains(raw, []byte(secret)))
	}
	raw = nil

	// The same key reopens the disk (sourceType "encrypted"): what the
	// first run left is cleared and the image is unpacked again.
	start = time.Now()
	out, errs, code = run()
	t.Logf("boot reopening the disk: %v", time.Since(start))
	if code != 0 || !strings.Contains(out, secret) || !strings.Contains(out, "ext2/ext3") {
		t.Fatalf("vm run reopening the scratch disk: exit %d, stdout %q, stderr %s", code, out, errs)
	}

	// A second disk formatted with dm-integrity tags (CDH's
	// dataIntegrity): mkfs and the pull go through the integrity layer.
	start = time.Now()
	out, errs, code = e.coffer("vm", "run", "--kernel-dir", e.kernel, "--state", state, "--kbs", e.kbs, "--init", e.bin,
		"--scratch-disk", filepath.Join(e.dir, "integrity.img")+":256M", "--scratch-integrity", "--scratch-key-id", "default/disk/scratch", e.image,
		"--", "/bin/busybox", "sh", "-c", "/bin/busybox cat /secret; /bin/busybox stat -f -c %T /")
	t.Logf("boot formatting a disk with integrity tags: %v", time.Since(start))
	if code != 0 || !strings.Contains(out, secret) || !strings.Contains(out, "ext2/ext3") {
		t.Fatalf("vm run with an integrity scratch disk: exit %d, stdout %q, stderr %s", code, out, errs)
	}
	dump, err := exec.Command(testutil.RequireTool(t, "cryptsetup"), "luksDump", filepath.Join(e.dir, "integrity.img")).CombinedOutput()
	if err != nil || !strings.Contains(string(dump), "integrity: hmac(sha256)") {
		t.Fatalf("cryptsetup luksDump of the integrity disk: %v\n%s", err, dump)
	}

	setKey() // the broker now holds another key
	start = time.Now()
	out, errs, code = run()
	t.Logf("boot with another key: %v: %s", time.Since(start), strings.TrimSpace(errs))
	if code != 3 || strings.Contains(out, secret) || !strings.Contains(errs, "the key does not open the LUKS2 device") || !strings.Contains(errs, "kbs:///default/disk/scratch") {
		t.Fatalf("vm run with another key: exit %d (want 3), stdout %q (want nothing), stderr %q", code, out, errs)
	}
}

// scratchEnv builds coffer, creates a machine's vTPM and EK CA without
// booting it, and starts a broker trusting that CA and releasing every
// resource to any attested guest (no reference values: no measure boot).
// setKey puts a new random scratch disk key at default/disk/scratch.
func scratchEnv(t testing.TB) (e *env, state string, setKey func()) {
	testutil.RequireTool(t, "qemu-system-x86_64")
	testutil.RequireTool(t, "swtpm")
	testutil.RequireTool(t, "swtpm_setup")
	testutil.RequireTool(t, "cryptsetup")
	testutil.RequireTool(t, "mke2fs")
	e = &env{t: t, kernel: kernelDir(t), dir: t.TempDir()}
	e.bin = testutil.StaticCoffer(t)
	state = filepath.Join(e.dir, "machine")
	if err := vm.EnsureTPM(t.Context(), state); err != nil {
		t.Fatal(err)
	}
	e.admin = filepath.Join(e.dir, "admin.key")
	e.must("kbs", "keygen-admin", "--out", e.admin)
	e.kbs = startBroker(t, e.dir, e.admin+".pub", filepath.Join(state, "ek-ca.pem"))
	adm := []string{"--url", e.kbs, "--admin-key", e.admin}
	e.must(append([]string{"kbs", "set-resource-policy", "--allow-all"}, adm...)...)
	setKey = func() {
		k := filepath.Join(e.dir, "disk.key")
		b := make([]byte, 32)
		rand.Read(b)
		os.WriteFile(k, b, 0o600)
		e.must(append([]string{"kbs", "set-resource", "--path", "default/disk/scratch", "--resource-file", k}, adm...)...)
	}
	return e, state, setKey
}

// BenchmarkScratchLargeLayer runs an encrypted image with one
// incompressible layer of $COFFER_VM_BENCH_LAYER_MIB MiB (default 320)
// in a guest of $COFFER_VM_BENCH_MEMORY MiB (default 256), unpacked onto
// a fresh 1 GiB LUKS2 scratch disk: the layer does not fit the guest's
// memory. It reports the phases (seconds since Run started), the pull's
// duration and the guest coffer's peak RSS. Each iteration is a boot.
func BenchmarkScratchLargeLayer(b *testing.B) {
	mib, mem := 320, 256
	if v, err := strconv.Atoi(os.Getenv("COFFER_VM_BENCH_LAYER_MIB")); err == nil && v > 0 {
		mib = v
	}
	if v, err := strconv.Atoi(os.Getenv("COFFER_VM_BENCH_MEMORY")); err == nil && v > 0 {
		mem = v
	}
	e, state, setKey := scratchEnv(b)
	setKey()
	reg := startRegistry(b)
	big := make([]byte, mib<<20)
	rand.Read(big)
	img := testutil.BusyboxImage(b, testutil.Layer{Files: map[string][]byte{"big": big}, Compression: ""})
	big = nil
	image := "docker://" + reg + "/bench/large:enc"
	e.push(img, image, true)
	var rss float64
	phases := map[string]time.Duration{}
	for b.Loop() {
		disk := filepath.Join(b.TempDir(), "scratch.img")
		var out strings.Builder
		code, err := vm.Run(b.Context(), image, []string{"/bin/busybox", "stat", "-c", "%s", "/big"},
			vm.WithKernelDir(e.kernel), vm.WithState(state), vm.WithInit(e.bin), vm.WithKBS(e.kbs), vm.WithMemory(mem),
			vm.WithScratchDisk(disk, 1024), vm.WithScratchKey("default/disk/scratch"),
			vm.WithOutput(&out, os.Stderr), vm.WithMarks(func(n string, at time.Duration) { phases[n] = at }),
			vm.WithStats(func(n string, v float64) {
				if n == "maxrss_kib" {
					rss = v
				}
			}))
		if err != nil || code != 0 || strings.TrimSpace(out.String()) != strconv.Itoa(mib<<20) {
			b.Fatalf("vm run: %d %v %q", code, err, out.String())
		}
	}
	for _, n := range []string{"attested", "scratch", "pulled", "output", "exit"} {
		b.ReportMetric(phases[n].Seconds(), n+"-s")
	}
	b.ReportMetric((phases["pulled"] - phases["scratch"]).Seconds(), "pull-s")
	b.ReportMetric(rss/1024, "guest-maxrss-MiB")
}
