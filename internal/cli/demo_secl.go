package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/coffer-dev/coffer/internal/demo"
)

// demoVMImage is the demo's VM-image chapter: the Intel SecL flow with
// swtpm as the host's TPM, skipped (and said so) without swtpm.
func demoVMImage(ctx context.Context, w io.Writer, dir, kbs string) error {
	p := func(s string) string { return filepath.Join(dir, s) }
	fmt.Fprintf(w, "\n== 6. A VM image the Intel SecL way: owner (wpm), provider (wls), host (wla) with a TPM\n")
	sw, err := demo.StartSwtpm(ctx, dir)
	if errors.Is(err, demo.ErrNoSwtpm) {
		fmt.Fprintf(w, "  skipped: %v; this chapter needs a TPM for the host\n", err)
		return nil
	}
	if err != nil {
		return err
	}
	defer sw.Stop()
	disk := append([]byte("a VM disk image\n"), make([]byte, 4<<20)...)
	rand.Read(disk[16:])
	if err := os.WriteFile(p("disk.qcow2"), disk, 0o600); err != nil {
		return err
	}
	if err := demo.WriteFlavorSigner(p("flavor-signer.pem"), p("signer.crt")); err != nil {
		return err
	}
	admin := []string{"--url", kbs, "--admin-key", p("admin.key")}
	fid, err := stepOutput(ctx, w, dir, "wpm", "create-image-flavor", "-l", "demo-vm", "-i", p("disk.qcow2"), "-e", p("disk.enc"),
		"-o", p("flavor.json"), "--kbs", kbs, "--admin-key", p("admin.key"), "--signing-key", p("flavor-signer.pem"))
	if err != nil {
		return err
	}
	if err := step(ctx, w, dir, "kbs", "keygen-admin", "--out", p("wls-admin.key")); err != nil {
		return err
	}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	ws, err := demo.StartWLS(wctx, dir, p("signer.crt"), p("wls-admin.key.pub"))
	if err != nil {
		return err
	}
	defer func() { stop(); ws.Wait() }()
	fmt.Fprintf(w, "\n$ coffer wls serve --flavor-signer-cert signer.crt --admin-public-key wls-admin.key.pub --db wls --listen 127.0.0.1:0 &\n")
	fmt.Fprintf(w, "  workload service listening at %s (run in this process); the host's TPM is swtpm at %s\n", ws.URL, sw.Addr)
	const image = "3f2e1d0c-9b8a-4776-8554-433221100fed"
	wadm := []string{"--url", ws.URL, "--admin-key", p("wls-admin.key")}
	if err := step(ctx, w, dir, append([]string{"wls", "add-flavor", p("flavor.json")}, wadm...)...); err != nil {
		return err
	}
	if err := step(ctx, w, dir, append([]string{"wls", "add-image", "--image-id", image, "--flavor-id", fid}, wadm...)...); err != nil {
		return err
	}
	ak, err := stepOutput(ctx, w, dir, "tpm", "ak-public", "--tpm", sw.Addr)
	if err != nil {
		return err
	}
	for _, args := range [][]string{
		append([]string{"kbs", "set-resource-policy", "--affirming"}, admin...),
		append(append([]string{"kbs", "set-reference-value"}, admin...), "tpm_ak_public", ak),
		append(append([]string{"kbs", "set-reference-value"}, admin...), "tpm_pcr00", strings.Repeat("0", 64)),
		{"wla", "decrypt-image", "--wls", ws.URL, "--image-id", image, "--tpm", sw.Addr, "--flavor-signer-cert", p("signer.crt"),
			"--broker-key", p("broker-token.pub"), "--expect-label", "demo-vm", "--insecure-loopback-http", "-i", p("disk.enc"), "-o", p("disk.img")},
	} {
		if err := step(ctx, w, dir, args...); err != nil {
			return err
		}
	}
	got, err := os.ReadFile(p("disk.img"))
	if err != nil || !bytes.Equal(got, disk) {
		return fmt.Errorf("demo: the host's decrypted image differs from the original (%v)", err)
	}
	fmt.Fprintln(w, "  disk.img is byte-identical to disk.qcow2: the key went to the host wrapped to its TPM binding key and never touched its disk")
	return nil
}
