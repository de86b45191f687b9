package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/coffer-dev/coffer/internal/cli"
	"github.com/coffer-dev/coffer/internal/testutil"
	"github.com/coffer-dev/coffer/secl/flavor"
	"github.com/coffer-dev/coffer/tpm/tpmtest"
	"github.com/coffer-dev/coffer/transport"
)

// crashCase is one command of the crash matrix: run, SIGKILLed at ten
// points spread over its run time, then checked.
type crashCase struct {
	name  string
	args  []string
	dest  string       // the destination path (file or directory)
	extra []string     // other paths the command writes (removed with dest)
	valid func() error // dest is complete and valid (called when it exists)
	// plain: the command stages plaintext (decrypt, pull, wla), so any
	// leftover in the watched directories is plaintext.
	plain bool
	// unnamed: the command leaves no staged file behind even when killed
	// (imagecrypt stages layers in unnamed O_TMPFILE files); otherwise
	// plaintext a killed run left must be gone after the rerun (staging's
	// sweep), as a partly unpacked rootfs is.
	unnamed bool
	watch   []string // directories scanned for leftovers (dest's parent, TMPDIR)
	// knownGap names the open issue when the row's plaintext leftovers are
	// known and fixed elsewhere: they are reported, not failed. Clear it
	// once that fix is merged.
	knownGap string
	// public names leftovers that hold nothing secret (the image config an
	// atomicfile temp holds): counted, not failed.
	public func(path string) bool
	// rerunGap is the refusal text of a known defect that makes reruns
	// after kills fail (reported as "refused", not failed).
	rerunGap string
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// crashRow is a line of the matrix.
type crashRow struct {
	name                      string
	killed, finishedFirst     int
	absent, complete, partial int
	leftAfterKill, leftPlain  int
	leftAfterRerun, rerunsOK  int
	refused                   int
	example                   string
}

func (r crashRow) String() string {
	refused := ""
	if r.refused > 0 {
		refused = fmt.Sprintf(" (REFUSED %d)", r.refused)
	}
	return fmt.Sprintf("%-22s kills landed %2d/10 (finished first %d) | dest absent %d, complete %d, PARTIAL %d | leftovers after kill %d (plaintext %d), after rerun %d | reruns ok %d/10%s %s",
		r.name, r.killed, r.finishedFirst, r.absent, r.complete, r.partial, r.leftAfterKill, r.leftPlain, r.leftAfterRerun, r.rerunsOK, refused, r.example)
}

// cliCmd runs this test binary as coffer (TestMain), with TMPDIR set.
func cliCmd(t *testing.T, tmp string, args ...string) *exec.Cmd {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, append([]string{argCLI}, args...)...)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	return cmd
}

// snapshot lists the entries of dirs (name → size).
func snapshot(dirs []string) map[string]int64 {
	m := map[string]int64{}
	for _, d := range dirs {
		filepath.Walk(d, func(p string, info os.FileInfo, err error) error {
			if err == nil && p != d {
				m[p] = info.Size()
				if info.IsDir() {
					m[p] = -1
				}
			}
			return nil
		})
	}
	return m
}

// leftovers are the files (not directories: an empty staging directory
// holds nothing) not in before and not under the destination.
func (c crashCase) leftovers(before map[string]int64) []string {
	var out []string
	skip := append([]string{c.dest}, c.extra...)
outer:
	for p, size := range snapshot(c.watch) {
		if _, ok := before[p]; ok || size < 0 {
			continue
		}
		for _, s := range skip {
			if p == s || strings.HasPrefix(p, s+string(filepath.Separator)) {
				continue outer
			}
		}
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

func (c crashCase) removeDest() {
	for _, p := range append([]string{c.dest}, c.extra...) {
		os.RemoveAll(p)
	}
}

// runCrash runs c once to time it, then kills it at ten points.
func runCrash(t *testing.T, c crashCase, tmp string) crashRow {
	t.Helper()
	row := crashRow{name: c.name}
	var d time.Duration // the faster of two uninterrupted runs
	for range 2 {
		c.removeDest()
		start := time.Now()
		if out, err := cliCmd(t, tmp, c.args...).CombinedOutput(); err != nil {
			t.Fatalf("%s: an uninterrupted run failed: %v\n%s", c.name, err, out)
		}
		if e := time.Since(start); d == 0 || e < d {
			d = e
		}
		if err := c.valid(); err != nil {
			t.Fatalf("%s: an uninterrupted run wrote an invalid destination: %v", c.name, err)
		}
	}
	for k := 1; k <= 10; k++ {
		c.removeDest()
		before := snapshot(c.watch)
		cmd := cliCmd(t, tmp, c.args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(d * time.Duration(k) / 11)
		if err := cmd.Process.Signal(syscall.SIGKILL); err == nil {
			werr := cmd.Wait()
			var ee *exec.ExitError
			if errors.As(werr, &ee) && ee.Sys().(syscall.WaitStatus).Signaled() {
				row.killed++
			} else {
				row.finishedFirst++
			}
		} else {
			cmd.Wait()
			row.finishedFirst++
		}
		if _, err := os.Lstat(c.dest); err != nil {
			row.absent++
		} else if err := c.valid(); err != nil {
			row.partial++
			t.Errorf("%s killed at %d/11 of its run: the destination exists but is not complete: %v", c.name, k, err)
		} else {
			row.complete++
		}
		left := c.leftovers(before)
		row.leftAfterKill += len(left)
		if c.plain {
			row.leftPlain += len(left)
		}
		if len(left) > 0 && row.example == "" {
			row.example = "e.g. " + strings.TrimPrefix(left[0], filepath.Dir(c.watch[0])+"/")
		}
		if c.unnamed {
			// Only the oci layout being committed (named, renamed into place
			// at once) may be caught by a kill; the rerun sweeps it.
			for _, l := range left {
				if !strings.Contains(l, "/.coffer-layout-") {
					t.Errorf("%s killed at %d/11: staged file left behind: %s", c.name, k, l)
				}
			}
		}
		// The same command again: it must succeed (over a complete
		// destination too, as a retry would run it) and clean up.
		c.removeDest()
		if o, err := cliCmd(t, tmp, c.args...).CombinedOutput(); err != nil {
			if c.rerunGap != "" && strings.Contains(string(o), c.rerunGap) {
				t.Logf("%s: KNOWN GAP: the rerun after a kill at %d/11 was refused: %s", c.name, k, lastLine(o))
				row.refused++
				continue
			}
			t.Errorf("%s: the rerun after a kill at %d/11 failed: %v\n%s", c.name, k, err, o)
			continue
		}
		if err := c.valid(); err != nil {
			t.Errorf("%s: the rerun wrote an invalid destination: %v", c.name, err)
			continue
		}
		row.rerunsOK++
		after := c.leftovers(before)
		row.leftAfterRerun += len(after)
		var secret []string
		for _, a := range after {
			if c.public == nil || !c.public(a) {
				secret = append(secret, a)
			}
		}
		switch {
		case c.plain && len(secret) == 0:
		case c.plain && c.knownGap != "":
			t.Logf("%s: KNOWN GAP (%s): plaintext staging of the killed run still there after the rerun: %v", c.name, c.knownGap, after)
		case c.plain:
			t.Errorf("%s: plaintext staging of the killed run still there after the rerun: %v", c.name, secret)
		}
	}
	return row
}

// ociRandom writes a random image of n layers of size bytes as DIR:v1.
func ociRandom(t *testing.T, dir string, size int64, n int) v1.Image {
	t.Helper()
	img, err := random.Image(size, int64(n))
	if err != nil {
		t.Fatal(err)
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "v1"})); err != nil {
		t.Fatal(err)
	}
	return img
}

// validImage reads the image at ref and re-hashes every blob.
func validImage(ref string, layers int) error {
	r, err := transport.Parse(ref)
	if err != nil {
		return err
	}
	a, done, err := transport.Read(context.Background(), r)
	if err != nil {
		return err
	}
	defer done()
	ls, err := a.Image.Layers()
	if err != nil {
		return err
	}
	if len(ls) != layers {
		return fmt.Errorf("%d layers, want %d", len(ls), layers)
	}
	for i, l := range ls {
		want, _ := l.Digest()
		rc, err := l.Compressed()
		if err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
		got, _, err := v1.SHA256(rc)
		rc.Close()
		if err != nil || got != want {
			return fmt.Errorf("layer %d: digest %s (%v), want %s", i, got, err, want)
		}
	}
	return nil
}

// The crash matrix of issue 20: encrypt, decrypt, pull, wpm
// create-image-flavor (filecrypt) and wla decrypt-image, each SIGKILLed
// at ten points of its run. The destination is never partial, every
// rerun succeeds, and plaintext left by a killed run is gone after the
// rerun; the matrix is logged (go test -v -run TestCrashMatrix ./e2e).
func TestCrashMatrix(t *testing.T) {
	if testing.Short() {
		t.Skip("crash matrix: not in -short")
	}
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	tmp := p("tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	k := newKeys(t)
	const layerSize, layers = 12 << 20, 2
	ociRandom(t, p("src"), layerSize, layers)
	mustCoffer(t, "encrypt", "--recipient", "jwe:"+k.ecPub, "oci:"+p("src")+":v1", "oci:"+p("enc")+":v1")
	watch := []string{dir, tmp}

	cases := []crashCase{
		{name: "encrypt", args: []string{"encrypt", "--recipient", "jwe:" + k.ecPub, "oci:" + p("src") + ":v1", "oci:" + p("out-enc") + ":v1"},
			dest: p("out-enc"), unnamed: true, valid: func() error { return validImage("oci:"+p("out-enc")+":v1", layers) }},
		{name: "decrypt", args: []string{"decrypt", "--key", k.ecPriv, "oci:" + p("enc") + ":v1", "oci:" + p("out-plain") + ":v1"},
			dest: p("out-plain"), plain: true, unnamed: true, valid: func() error { return validImage("oci:"+p("out-plain")+":v1", layers) }},
		{name: "pull", args: []string{"pull", "--key", k.ecPriv, "oci:" + p("enc") + ":v1", p("rootfs")},
			dest: p("rootfs"), extra: []string{p("rootfs") + ".config.json"}, plain: true,
			public: func(path string) bool { return strings.HasPrefix(filepath.Base(path), ".tmp-rootfs.config.json-") },
			valid: func() error {
				if _, err := os.Stat(p("rootfs") + ".config.json"); err != nil {
					return err
				}
				ents, err := os.ReadDir(p("rootfs"))
				if err != nil || len(ents) == 0 {
					return fmt.Errorf("rootfs: %d entries, %v", len(ents), err)
				}
				return nil
			}},
	}
	cases = append(cases, seclCrashCases(t, dir)...)

	var rows []crashRow
	for _, c := range cases {
		if c.watch == nil {
			c.watch = watch
		}
		rows = append(rows, runCrash(t, c, tmp))
	}
	var b strings.Builder
	for _, r := range rows {
		b.WriteString(r.String() + "\n")
	}
	t.Logf("crash matrix (SIGKILL at k/11 of an uninterrupted run, k = 1..10):\n%s", b.String())
}

// seclCrashCases are wpm create-image-flavor (filecrypt encrypt) and wla
// decrypt-image (TPM, WLS, broker; filecrypt decrypt), when swtpm is here.
func seclCrashCases(t *testing.T, dir string) []crashCase {
	p := func(n string) string { return filepath.Join(dir, n) }
	if _, err := exec.LookPath("swtpm"); err != nil && os.Getenv("COFFER_REQUIRE_EXTERNAL") != "1" {
		t.Log("crash matrix: swtpm is not installed: the filecrypt and wla rows are skipped")
		return nil
	}
	host := tpmtest.StartSwtpm(t)
	boot := pcrExtend(t, host, 11, "kernel and initrd of the crash host")
	mustCoffer(t, "kbs", "keygen-admin", "--out", p("kbs-admin.key"))
	mustCoffer(t, "kbs", "keygen-admin", "--out", p("wls-admin.key"))
	// The broker with a token key of its own: hosts that pin it (wla
	// --broker-key, where the verb has it) check the key transfer proof.
	tk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tder, _ := x509.MarshalPKCS8PrivateKey(tk)
	pder, _ := x509.MarshalPKIXPublicKey(&tk.PublicKey)
	tokenKey := writePEM(t, p("crash-token.pem"), "PRIVATE KEY", tder)
	tokenPub := writePEM(t, p("crash-token.pub"), "PUBLIC KEY", pder)
	baddr := testutil.FreeAddr(t)
	bp := &brokerProc{t: t, args: []string{"kbs", "serve", "--allow-sample-tee", "--admin-public-key", p("kbs-admin.key.pub"),
		"--repository", filepath.Join(t.TempDir(), "repo") /* outside the watched dir */, "--token-key", tokenKey, "--listen", baddr}}
	bp.start()
	t.Cleanup(bp.kill)
	kbs := "http://" + baddr
	adm := []string{"--url", kbs, "--admin-key", p("kbs-admin.key")}
	flavorSigner(t, dir)
	plain := make([]byte, 24<<20)
	rand.Read(plain)
	if err := os.WriteFile(p("disk.qcow2"), plain, 0o600); err != nil {
		t.Fatal(err)
	}
	wpmArgs := func(enc, fl string) []string {
		return []string{"wpm", "create-image-flavor", "-l", "crash", "-i", p("disk.qcow2"), "-e", enc, "-o", fl,
			"--kbs", kbs, "--admin-key", p("kbs-admin.key"), "--signing-key", p("flavor-signer.pem")}
	}
	fid := strings.TrimSpace(mustCoffer(t, wpmArgs(p("disk.enc"), p("flavor.json"))...))
	// The WLS without its per-address rate limit: the matrix reruns one
	// host's command 30 times in seconds, faster than a host ever would.
	wls := crashWLS(t, "--flavor-signer-cert", p("signer.crt"), "--admin-public-key", p("wls-admin.key.pub"),
		"--db", filepath.Join(t.TempDir(), "wls-db"), "--rate-limit", "0")
	wadm := []string{"--url", wls, "--admin-key", p("wls-admin.key")}
	mustCoffer(t, append([]string{"wls", "add-flavor", p("flavor.json")}, wadm...)...)
	const image = "1d9c8b7a-6f5e-4d3c-8b2a-190817263544"
	mustCoffer(t, append([]string{"wls", "add-image", "--image-id", image, "--flavor-id", fid}, wadm...)...)
	ak := strings.TrimSpace(mustCoffer(t, "tpm", "ak-public", "--tpm", host.Addr))
	mustCoffer(t, append([]string{"kbs", "set-reference-value", "tpm_ak_public", ak}, adm...)...)
	mustCoffer(t, append([]string{"kbs", "set-reference-value", "tpm_pcr11", extended(boot)}, adm...)...)

	wlaArgs := []string{"wla", "decrypt-image", "--wls", wls, "--image-id", image, "--tpm", host.Addr}
	if hasFlag("wla decrypt-image", "broker-key") { // hosts that pin their trust anchors
		wlaArgs = append(wlaArgs, "--flavor-signer-cert", p("signer.crt"), "--broker-key", tokenPub, "--expect-label", "crash", "--insecure-loopback-http")
	}
	return []crashCase{
		{name: "filecrypt (wpm)", args: wpmArgs(p("fc.enc"), p("fc.flavor.json")), dest: p("fc.flavor.json"), extra: []string{p("fc.enc")},
			valid: func() error {
				doc, err := os.ReadFile(p("fc.flavor.json"))
				if err != nil {
					return err
				}
				_, f, err := flavor.Parse(doc)
				if err != nil {
					return err
				}
				enc, err := os.ReadFile(p("fc.enc"))
				if err != nil {
					return fmt.Errorf("the flavor names %s, which is not there: %w", p("fc.enc"), err)
				}
				s256, s384 := sha256.Sum256(enc), sha512.Sum384(enc) // streaming format: SHA-256; SecL's: SHA-384
				if f.Encryption == nil || f.Encryption.Digest != base64.StdEncoding.EncodeToString(s256[:]) && f.Encryption.Digest != base64.StdEncoding.EncodeToString(s384[:]) {
					return errors.New("the encrypted image does not match its flavor's digest")
				}
				return nil
			}},
		{name: "wla decrypt-image", args: append(wlaArgs, "-i", p("disk.enc"), "-o", p("disk.img")),
			dest: p("disk.img"), plain: true,
			rerunGap: "unanswered broker challenges", // W20's per-address cap counts the killed runs' challenges
			valid: func() error {
				f, err := os.Open(p("disk.img"))
				if err != nil {
					return err
				}
				defer f.Close()
				got, err := io.ReadAll(f)
				if err != nil || !bytes.Equal(got, plain) {
					return fmt.Errorf("disk.img: %d bytes, not the plaintext (%v)", len(got), err)
				}
				return nil
			}},
	}
}

// A full disk (a small tmpfs) under encrypt, decrypt and pull: one clear
// line, nothing left at the destination or in staging, and once space is
// freed the same command succeeds.
func TestCrashFullDisk(t *testing.T) {
	testutil.RequireExternal(t, os.Geteuid() == 0, "mounting a small tmpfs needs root")
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	small := p("small")
	if err := os.Mkdir(small, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", small, "tmpfs", 0, "size=96m"); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v): full-disk case skipped", err)
	}
	t.Cleanup(func() { syscall.Unmount(small, syscall.MNT_DETACH) })
	k := newKeys(t)
	ociRandom(t, p("src"), 16<<20, 2)
	mustCoffer(t, "encrypt", "--recipient", "jwe:"+k.ecPub, "oci:"+p("src")+":v1", "oci:"+p("enc")+":v1")
	filler := filepath.Join(small, "filler")
	for _, tc := range []struct {
		name string
		args []string
		dest string
	}{
		{"encrypt", []string{"encrypt", "--recipient", "jwe:" + k.ecPub, "oci:" + p("src") + ":v1", "oci:" + filepath.Join(small, "out") + ":v1"}, filepath.Join(small, "out")},
		{"decrypt", []string{"decrypt", "--key", k.ecPriv, "oci:" + p("enc") + ":v1", "oci:" + filepath.Join(small, "out") + ":v1"}, filepath.Join(small, "out")},
		{"pull", []string{"pull", "--key", k.ecPriv, "oci:" + p("enc") + ":v1", filepath.Join(small, "rootfs")}, filepath.Join(small, "rootfs")},
	} {
		// Leave 12 MiB: less than one image (32 MiB of layers).
		if err := os.WriteFile(filler, make([]byte, 84<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := cliCmd(t, small, tc.args...).CombinedOutput()
		msg := strings.TrimSpace(string(out))
		if err == nil {
			t.Errorf("%s onto a full disk succeeded", tc.name)
		} else if lines := strings.Split(msg, "\n"); strings.Count(msg, "coffer: ") != 1 || !strings.HasPrefix(lines[len(lines)-1], "coffer: ") ||
			!strings.Contains(lines[len(lines)-1], "no space left on device") {
			t.Errorf("%s onto a full disk: want one error line naming ENOSPC, got\n%s", tc.name, msg)
		} else {
			t.Logf("%s onto a full disk: %s", tc.name, msg)
		}
		ents, _ := os.ReadDir(small)
		if len(ents) != 1 {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Errorf("%s onto a full disk left %v", tc.name, names)
		}
		os.Remove(filler)
		if out, err := cliCmd(t, small, tc.args...).CombinedOutput(); err != nil {
			t.Errorf("%s with space again: %v\n%s", tc.name, err, out)
		}
		os.RemoveAll(tc.dest)
		os.Remove(tc.dest + ".config.json")
	}
}

// brokerProc is `coffer kbs serve` in a process of its own, restartable on
// the same address, repository and state.
type brokerProc struct {
	t    *testing.T
	args []string
	cmd  *exec.Cmd
	log  bytes.Buffer
}

func (b *brokerProc) start() {
	b.cmd = cliCmd(b.t, b.t.TempDir(), b.args...)
	b.cmd.Stdout, b.cmd.Stderr = &b.log, &b.log
	if err := b.cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	addr := b.args[len(b.args)-1]
	testutil.WaitListening(b.t, addr)
}

func (b *brokerProc) kill() {
	b.cmd.Process.Signal(syscall.SIGKILL)
	b.cmd.Wait()
}

// A broker SIGKILLed between the guest's /auth and /attest: the pull fails
// with one clear line, and once the broker is back the same pull works.
func TestCrashBrokerMidHandshake(t *testing.T) {
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	mustCoffer(t, "kbs", "keygen-admin", "--out", p("admin.key"))
	addr := testutil.FreeAddr(t)
	b := &brokerProc{t: t, args: []string{"kbs", "serve", "--allow-sample-tee", "--admin-public-key", p("admin.key.pub"),
		"--repository", p("repo"), "--state-dir", p("state"), "--listen", addr}}
	b.start()
	t.Cleanup(b.kill)
	url := "http://" + addr
	adm := []string{"--url", url, "--admin-key", p("admin.key")}
	mustCoffer(t, append([]string{"kbs", "set-reference-value", "launch_digest", "abcde"}, adm...)...)
	mustCoffer(t, append([]string{"kbs", "set-reference-value", "svn", "1"}, adm...)...)
	ociRandom(t, p("src"), 1<<20, 1)
	mustCoffer(t, "encrypt", "--kbs", url, "--admin-key", p("admin.key"), "--key-id", "default/image_key/app", "oci:"+p("src")+":v1", "oci:"+p("enc")+":v1")

	// A proxy in front of the broker kills it when the guest's /attest arrives.
	var killed bool
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/kbs/v0/attest" && !killed {
			killed = true
			b.kill()
		}
		httputil.NewSingleHostReverseProxy(&neturl.URL{Scheme: "http", Host: addr}).ServeHTTP(w, r)
	}))
	t.Cleanup(proxy.Close)
	pull := []string{"pull", "--kbs", proxy.URL, "--tee", "sample", "oci:" + p("enc") + ":v1", p("rootfs")}
	out, err := cliCmd(t, dir, pull...).CombinedOutput()
	msg := strings.TrimSpace(string(out))
	if err == nil || !killed {
		t.Fatalf("pull with the broker killed mid-handshake: %v (killed %v)\n%s", err, killed, msg)
	}
	if strings.Count(msg, "\n") != 0 || !strings.HasPrefix(msg, "coffer: ") {
		t.Errorf("want one error line, got\n%s", msg)
	}
	t.Logf("broker killed mid-handshake: %s", msg)
	if _, err := os.Lstat(p("rootfs")); err == nil {
		t.Error("a rootfs was left behind")
	}
	b.start()
	if out, err := cliCmd(t, dir, pull...).CombinedOutput(); err != nil {
		t.Fatalf("the same pull with the broker back: %v\n%s", err, out)
	}
}

// hasFlag reports whether the coffer verb (e.g. "wla decrypt-image") has the flag.
func hasFlag(verb, flag string) bool {
	c, _, err := cli.NewRoot().Find(strings.Fields(verb))
	return err == nil && c.Flags().Lookup(flag) != nil
}

// crashWLS runs `coffer wls serve ARGS` in-process on a free loopback port.
func crashWLS(t *testing.T, args ...string) string {
	t.Helper()
	addr := testutil.FreeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		root := cli.NewRoot()
		root.SetArgs(append([]string{"wls", "serve", "--listen", addr}, args...))
		done <- root.ExecuteContext(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	testutil.WaitListening(t, addr)
	return "http://" + addr
}
