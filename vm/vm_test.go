package vm_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/coffer-dev/coffer/internal/testutil"
	"github.com/coffer-dev/coffer/kbs/attest"
	"github.com/coffer-dev/coffer/kbs/attest/eventlog"
	"github.com/coffer-dev/coffer/kbs/kbstest"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/vm"
)

const secret = "the guest's secret is 42"

// kernelDir is the extracted Debian linux-image package: $COFFER_VM_KERNEL_DIR,
// else where .ci/run extracts it.
func kernelDir(t testing.TB) string { return testutil.KernelDir(t) }

type env struct {
	t                      testing.TB
	bin, kernel, dir, kbs  string
	admin, image, initData string
}

func (e *env) coffer(args ...string) (string, string, int) {
	e.t.Helper()
	cmd := exec.Command(e.bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("coffer %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

func (e *env) must(args ...string) string {
	e.t.Helper()
	out, errs, code := e.coffer(args...)
	if code != 0 {
		e.t.Fatalf("coffer %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

func startRegistry(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0))), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

func startBroker(t testing.TB, dir, adminPub string, ekCA ...string) string {
	return kbstest.ServeFiles(t, dir, adminPub, ekCA...)
}

// TestGuest boots real guests (QEMU TCG, swtpm, Debian's kernel, coffer
// as init): once to measure, once to run an encrypted busybox image that
// prints its secret, and once per refusal (changed --append, changed
// init-data, an initramfs whose /init the owner did not measure, a vTPM
// whose EK another CA certified). The measure boot's evidence, tampered,
// is refused offline.
func TestGuest(t *testing.T) {
	testutil.RequireTool(t, "qemu-system-x86_64")
	testutil.RequireTool(t, "swtpm")
	testutil.RequireTool(t, "swtpm_setup")
	e := &env{t: t, kernel: kernelDir(t), dir: t.TempDir()}
	e.bin = testutil.StaticCoffer(t)
	state := filepath.Join(e.dir, "machine")
	e.initData = filepath.Join(e.dir, "init.toml")
	os.WriteFile(e.initData, []byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"policy.rego\" = \"package agent_policy\"\n"), 0o600)
	vmArgs := func(st string, extra ...string) []string {
		return append([]string{"--kernel-dir", e.kernel, "--state", st}, extra...)
	}

	// Measure the machine (this also creates its vTPM and EK CA), through
	// the library so that the guest's evidence can be tampered with below.
	var evidence []byte
	start := time.Now()
	refList, err := vm.Measure(t.Context(), vm.WithKernelDir(e.kernel), vm.WithState(state), vm.WithInitData(e.initData),
		vm.WithInit(e.bin), vm.WithEvidence(func(b []byte) { evidence = b }))
	if err != nil {
		t.Fatalf("measure: %v", err)
	}
	t.Logf("measure boot: %v", time.Since(start))
	if f := os.Getenv("COFFER_VM_RECORD"); f != "" { // refresh kbs/attest/testdata/vm_evidence.json
		os.WriteFile(f, evidence, 0o644)
	}
	refs := map[string]string{}
	for _, r := range refList {
		refs[r.Name] = r.Value
	}
	for _, n := range []string{"tpm_ak_public", "tpm_pcr00", "tpm_pcr07", "tpm_boot_init_data", "tpm_boot_cmdline", "tpm_boot_init"} {
		if refs[n] == "" {
			t.Fatalf("vm measure gave no %s: %v", n, refList)
		}
	}
	t.Run("tampered logs", func(t *testing.T) { tampered(t, evidence) })

	// Broker trusting the machine's EK CA, with the measured reference values
	// (the AK is not pinned: the EK vouches for it).
	e.admin = filepath.Join(e.dir, "admin.key")
	e.must("kbs", "keygen-admin", "--out", e.admin)
	e.kbs = startBroker(t, e.dir, e.admin+".pub", filepath.Join(state, "ek-ca.pem"))
	adm := []string{"--url", e.kbs, "--admin-key", e.admin}
	for n, v := range refs {
		if n == "tpm_ak_public" {
			continue
		}
		e.must(append(append([]string{"kbs", "set-reference-value"}, adm...), n, v)...)
	}
	e.must(append([]string{"kbs", "set-resource-policy", "--affirming"}, adm...)...)

	// The encrypted busybox image on a registry on the host's loopback.
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

	run := func(st string, extra ...string) (string, string, int) {
		args := append([]string{"vm", "run"}, vmArgs(st, "--kbs", e.kbs)...)
		args = append(args, extra...)
		return e.coffer(args...)
	}

	t.Run("runs", func(t *testing.T) {
		start := time.Now()
		out, errs, code := run(state, "--init-data", e.initData, e.image, "--", "/bin/busybox", "sh", "-c", "/bin/busybox cat /secret; echo on-stderr >&2; exit 7")
		t.Logf("run boot: %v", time.Since(start))
		if code != 7 || strings.TrimSpace(out) != secret || !strings.Contains(errs, "on-stderr") {
			t.Fatalf("vm run: exit %d (want 7), stdout %q (want the secret), stderr %q", code, out, errs)
		}
	})
	refused := func(t *testing.T, st string, want string, extra ...string) {
		t.Helper()
		out, errs, code := run(st, append(extra, e.image, "--", "/bin/busybox", "cat", "/secret")...)
		if code != 5 || strings.Contains(out, secret) || !strings.Contains(errs, want) {
			t.Fatalf("vm run: exit %d (want 5), stdout %q (want nothing), stderr %q (want %q)", code, out, errs, want)
		}
		t.Logf("refused: %s", strings.TrimSpace(errs))
	}
	t.Run("changed append", func(t *testing.T) {
		refused(t, state, "PCR 9: kernel command line digest", "--init-data", e.initData, "--append", "quiet")
	})
	t.Run("changed init-data", func(t *testing.T) {
		other := filepath.Join(e.dir, "other.toml")
		os.WriteFile(other, []byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"policy.rego\" = \"package allow_all\"\n"), 0o600)
		refused(t, state, "PCR 8: init-data digest", "--init-data", other)
	})
	t.Run("unmeasured initramfs", func(t *testing.T) {
		// The same coffer with a byte more: another /init than measured.
		b, _ := os.ReadFile(e.bin)
		other := filepath.Join(e.dir, "coffer-other")
		os.WriteFile(other, append(b, 0), 0o755)
		refused(t, state, "PCR 10: /init (IMA) digest", "--init-data", e.initData, "--init", other)
	})
	t.Run("EK of another CA", func(t *testing.T) {
		refused(t, filepath.Join(e.dir, "machine2"), "does not chain to a trusted EK CA", "--init-data", e.initData)
	})
}

// tampered checks the measure boot's real evidence offline: it verifies
// as it is; with a firmware event or the IMA measurement of /init
// changed it no longer replays, and the error names the PCR.
func tampered(t *testing.T, ev []byte) {
	ver := attest.NewTPM(attest.Config{})
	verify := func(b []byte) error {
		_, err := ver.Verify(t.Context(), attest.Evidence{Tee: "tpm", Primary: b, NoBinding: true})
		return err
	}
	if err := verify(ev); err != nil {
		t.Fatalf("the guest's own evidence: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(ev, &m); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ field, pcr string }{{"event_log", "PCR "}, {"ima_log", "PCR 10"}} {
		raw, _ := base64.StdEncoding.DecodeString(m[c.field].(string))
		bad := bytes.Clone(raw)
		at := len(bad) - 40 // the firmware log: inside the last event's digest
		if c.field == "ima_log" {
			at = bytes.Index(bad, []byte("/init\x00")) - 5 // the last byte of /init's file digest
		}
		bad[at] ^= 1
		mm := maps.Clone(m)
		mm[c.field] = base64.StdEncoding.EncodeToString(bad)
		b, _ := json.Marshal(mm)
		err := verify(b)
		if !errors.Is(err, spec.ErrIntegrity) && !errors.Is(err, spec.ErrUnsupported) || !strings.Contains(err.Error(), c.pcr) {
			t.Errorf("%s tampered: %v, want a refusal naming %q", c.field, err, c.pcr)
		} else {
			t.Logf("%s tampered: %v", c.field, err)
		}
	}
	_ = eventlog.ErrReplay
}
