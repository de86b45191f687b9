package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/coffer-dev/coffer/internal/demo"
	"github.com/coffer-dev/coffer/spec"
)

func newDemoCmd() *cobra.Command {
	var keep bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the whole confidential-image flow on embedded defaults (no network)",
		Long: `Generate an image holding /secret, encrypt it for a local key and for a key held
by an in-process key broker (loopback only), inspect it, decrypt it, pull it with
sample attestation under an allowing policy, then show the denial under a deny policy.
Then the Intel SecL VM-image flow (wpm, wls, wla) with swtpm as the host's TPM, when
swtpm is installed. Last, a confidential guest (coffer vm) when QEMU, swtpm and a
kernel package are there; the demo says plainly what it skipped.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := os.MkdirTemp("", "coffer-demo-")
			if err != nil {
				return err
			}
			if keep {
				fmt.Fprintf(cmd.OutOrStdout(), "working directory (kept): %s\n", dir)
			} else {
				defer os.RemoveAll(dir)
			}
			return runDemo(cmd.Context(), cmd.OutOrStdout(), dir)
		},
	}
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the working directory")
	return cmd
}

func runDemo(ctx context.Context, w io.Writer, dir string) error {
	p := func(s string) string { return filepath.Join(dir, s) }
	say := func(format string, a ...any) { fmt.Fprintf(w, "\n== "+format+"\n", a...) }

	say("1. An image whose first layer holds /secret")
	if err := demo.WriteImage(p("app"), "v1"); err != nil {
		return fmt.Errorf("building the demo image: %w", err)
	}
	if err := step(ctx, w, dir, "inspect", "oci:"+p("app")+":v1"); err != nil {
		return err
	}

	say("2. Encrypt for a local RSA key (jwe, the format skopeo and ctr-enc use), then decrypt")
	if err := demo.WriteRSAKeys(p("priv.pem"), p("pub.pem")); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"encrypt", "--recipient", "jwe:" + p("pub.pem"), "oci:" + p("app") + ":v1", "oci:" + p("app") + ":jwe"},
		{"inspect", "oci:" + p("app") + ":jwe"},
		{"decrypt", "--key", p("priv.pem"), "oci:" + p("app") + ":jwe", "oci:" + p("plain") + ":v1"},
	} {
		if err := step(ctx, w, dir, args...); err != nil {
			return err
		}
	}
	fmt.Fprintln(w, "  (every layer's HMAC and digest were verified before the output was written)")

	say("3. A key broker on loopback (CoCo KBS protocol), its admin key, an encryption key it holds")
	if err := step(ctx, w, dir, "kbs", "keygen-admin", "--out", p("admin.key")); err != nil {
		return err
	}
	bctx, stop := context.WithCancel(ctx)
	defer stop()
	b, err := demo.StartBroker(bctx, dir, p("admin.key.pub"))
	if err != nil {
		return err
	}
	defer func() { stop(); b.Wait() }()
	fmt.Fprintf(w, "\n$ coffer kbs serve --allow-sample-tee --admin-public-key admin.key.pub --repository repository --listen 127.0.0.1:0 &\n")
	fmt.Fprintf(w, "  broker listening at %s (run in this process; --allow-sample-tee: the demo has no TEE, development only)\n", b.URL)
	admin := []string{"--url", b.URL, "--admin-key", p("admin.key")}
	steps := [][]string{
		append([]string{"encrypt", "--kbs", b.URL, "--admin-key", p("admin.key"), "--key-id", "default/image_key/demo", "--pin"},
			"oci:"+p("app")+":v1", "oci:"+p("app")+":kbs"),
		{"inspect", "oci:" + p("app") + ":kbs"},
		append([]string{"kbs", "set-reference-value"}, append(admin, "launch_digest", "abcde")...),
		append([]string{"kbs", "set-reference-value"}, append(admin, "svn", "1")...),
	}
	for i, args := range steps {
		if i == 2 {
			fmt.Fprintln(w, "\n  (the broker's default resource policy releases keys to \"affirming\" attestations only; the sample TEE's\n"+
				"  evidence claims launch_digest abcde and svn 1, so those are the reference values to set, as you\n"+
				"  would set your hardware's measurements: see the README's hardware attestation section)")
		}
		if err := step(ctx, w, dir, args...); err != nil {
			return err
		}
	}

	say("4. Pull inside the (sample) TEE: attest, get the key, decrypt, verify, unpack")
	if err := step(ctx, w, dir, "pull", "--kbs", b.URL, "--tee", "sample", "oci:"+p("app")+":kbs", p("rootfs")); err != nil {
		return err
	}
	secret, err := os.ReadFile(p("rootfs/secret"))
	if err != nil {
		return fmt.Errorf("reading the pulled secret: %w", err)
	}
	fmt.Fprintf(w, "  rootfs/secret: %s", secret)

	say("5. The owner revokes: the broker now denies the key, and the pull fails cleanly")
	if err := step(ctx, w, dir, append([]string{"kbs", "set-resource-policy", "--deny-all"}, admin...)...); err != nil {
		return err
	}
	err = step(ctx, w, dir, "pull", "--kbs", b.URL, "--tee", "sample", "oci:"+p("app")+":kbs", p("rootfs2"))
	if err == nil {
		return errors.New("demo: the pull succeeded under a deny policy")
	}
	fmt.Fprintf(w, "  coffer: %v\n", err)
	if _, serr := os.Stat(p("rootfs2")); serr == nil {
		return errors.New("demo: a denied pull left a rootfs behind")
	}
	if errors.Is(err, spec.ErrPolicyDenied) {
		fmt.Fprintln(w, "  (exit code 5: denied by policy; no rootfs2 was created)")
	}
	if err := demoVMImage(ctx, w, dir, b.URL); err != nil {
		return err
	}
	if err := demoGuest(ctx, w, dir); err != nil {
		return err
	}
	say("Done: encrypted, inspected, decrypted with a local key; released by the broker only after attestation and only while policy allowed")
	return nil
}
