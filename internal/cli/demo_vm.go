package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/coffer-dev/coffer/internal/demo"
	"github.com/coffer-dev/coffer/spec"
)

// demoGuest is the demo's vm chapter: measure a guest, register it, run
// the encrypted image inside it, then boot it with another command line
// and watch the broker refuse it. It says plainly what it skipped.
func demoGuest(ctx context.Context, w io.Writer, dir string) error {
	fmt.Fprintf(w, "\n== 7. A confidential guest: coffer as the init of a QEMU VM with a vTPM, measured boot checked by the broker\n")
	kdir := demo.GuestKernelDir(os.Getenv("COFFER_VM_KERNEL_DIR"))
	if why := demo.GuestMissing(kdir); why != "" {
		fmt.Fprintf(w, "  skipped: %s\n", why)
		return nil
	}
	vdir := filepath.Join(dir, "vm")
	if err := os.MkdirAll(vdir, 0o700); err != nil {
		return err
	}
	p := func(s string) string { return filepath.Join(vdir, s) }
	machine := []string{"--kernel-dir", kdir, "--state", p("machine")}
	if err := os.WriteFile(p("init.toml"), []byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"note\" = \"coffer demo\"\n"), 0o600); err != nil {
		return err
	}
	var refs strings.Builder
	if err := step(ctx, io.MultiWriter(w, &refs), dir, append(append([]string{"vm", "measure"}, machine...), "--init-data", p("init.toml"))...); err != nil {
		return err
	}
	if err := step(ctx, w, dir, "kbs", "keygen-admin", "--out", p("admin.key")); err != nil {
		return err
	}
	bctx, stop := context.WithCancel(ctx)
	defer stop()
	b, err := demo.StartTPMBroker(bctx, vdir, p("admin.key.pub"), p("machine/ek-ca.pem"))
	if err != nil {
		return err
	}
	defer func() { stop(); b.Wait() }()
	fmt.Fprintf(w, "  broker at %s trusts the machine's EK CA (kbs serve --tpm-ek-ca vm/machine/ek-ca.pem)\n", b.URL)
	reg, err := demo.StartRegistry(bctx)
	if err != nil {
		return err
	}
	if err := demo.WriteGuestImage(p("guest"), "v1"); err != nil {
		return err
	}
	admin := []string{"--url", b.URL, "--admin-key", p("admin.key")}
	for _, l := range strings.Split(refs.String(), "\n") {
		f := strings.Fields(l)
		if len(f) == 2 && f[0] != "tpm_ak_public" && !strings.HasPrefix(f[0], "$") {
			if err := step(ctx, w, dir, append(append([]string{"kbs", "set-reference-value"}, admin...), f[0], f[1])...); err != nil {
				return err
			}
		}
	}
	image := "docker://" + reg + "/demo/guest:enc"
	for _, args := range [][]string{
		{"encrypt", "--kbs", b.URL, "--admin-key", p("admin.key"), "--key-id", "default/image_key/guest", "--insecure", "oci:" + p("guest") + ":v1", image},
		append([]string{"kbs", "set-resource-policy", "--affirming"}, admin...),
		append(append(append([]string{"vm", "run"}, machine...), "--init-data", p("init.toml"), "--kbs", b.URL), image),
	} {
		if err := step(ctx, w, dir, args...); err != nil {
			return err
		}
	}
	err = step(ctx, w, dir, append(append(append([]string{"vm", "run"}, machine...), "--init-data", p("init.toml"), "--kbs", b.URL, "--append", "quiet"), image)...)
	if err == nil {
		return errors.New("demo: a guest booted with another command line got the key")
	}
	fmt.Fprintf(w, "  coffer: %v\n", err)
	if errors.Is(err, spec.ErrPolicyDenied) {
		fmt.Fprintln(w, "  (exit code 5: the broker refused the changed boot; nothing was decrypted)")
	}
	return nil
}
