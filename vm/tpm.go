package vm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/coffer-dev/coffer/internal/atomicfile"
	"github.com/coffer-dev/coffer/spec"
)

// The state directory's layout (one guest "machine").
const (
	stateTPM    = "tpm"       // swtpm's state
	stateCA     = "ca"        // the EK certificate authority (swtpm-localca)
	EKCAFile    = "ek-ca.pem" // root and issuer certificates of the EK CA: kbs serve --tpm-ek-ca
	stateSocket = "swtpm.sock"
)

// ensureTPM creates the vTPM of state on first use: a certificate
// authority of its own (swtpm-localca: a root and an issuer) and a TPM
// 2.0 state with a SHA-256 PCR bank, an EK and its certificate (and a
// platform certificate) issued by that CA, NV locked. Then it writes
// EKCAFile. A state that exists is used as it is, so the same machine
// boots again with the same EK.
func ensureTPM(ctx context.Context, state string) error {
	tpmDir := filepath.Join(state, stateTPM)
	if _, err := os.Stat(filepath.Join(tpmDir, "tpm2-00.permall")); err == nil {
		if _, err := os.Stat(filepath.Join(state, EKCAFile)); err == nil {
			return nil
		}
	}
	setup, err := exec.LookPath("swtpm_setup")
	if err != nil {
		return fmt.Errorf("swtpm_setup not found (apt-get install swtpm-tools): %w", spec.ErrNotFound)
	}
	localca, err := exec.LookPath("swtpm_localca")
	if err != nil {
		return fmt.Errorf("swtpm_localca not found (apt-get install swtpm-tools): %w", spec.ErrNotFound)
	}
	abs, err := filepath.Abs(state)
	if err != nil {
		return err
	}
	ca := filepath.Join(abs, stateCA)
	for _, d := range []string{ca, filepath.Join(abs, stateTPM)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("vm state: %w", err)
		}
	}
	files := map[string]string{
		"swtpm-localca.conf":    fmt.Sprintf("statedir = %[1]s\nsigningkey = %[1]s/signkey.pem\nissuercert = %[1]s/issuercert.pem\ncertserial = %[1]s/certserial\n", ca),
		"swtpm-localca.options": "--platform-manufacturer coffer\n--platform-version 2.1\n--platform-model QEMU\n",
		"swtpm_setup.conf":      fmt.Sprintf("create_certs_tool = %s\ncreate_certs_tool_config = %s/swtpm-localca.conf\ncreate_certs_tool_options = %s/swtpm-localca.options\nactive_pcr_banks = sha256\n", localca, ca, ca),
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(ca, name), []byte(body), 0o600); err != nil {
			return fmt.Errorf("vm state: %w", err)
		}
	}
	cmd := exec.CommandContext(ctx, setup, "--tpm2", "--tpmstate", filepath.Join(abs, stateTPM),
		"--create-ek-cert", "--create-platform-cert", "--lock-nvram", "--overwrite",
		"--config", filepath.Join(ca, "swtpm_setup.conf"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("swtpm_setup: %v: %s", err, lastLines(out, 3))
	}
	var bundle []byte
	for _, f := range []string{"swtpm-localca-rootca-cert.pem", "issuercert.pem"} {
		b, err := os.ReadFile(filepath.Join(ca, f))
		if err != nil {
			return fmt.Errorf("vm state: the EK CA: %w", err)
		}
		bundle = append(bundle, b...)
	}
	return atomicfile.Write(filepath.Join(abs, EKCAFile), bundle, atomicfile.Mode(0o644))
}

// startTPM starts swtpm on state's vTPM with its control channel on a unix
// socket (0600 in the state directory) and returns the socket path and a
// function that stops it. swtpm ends by itself when QEMU closes the socket
// (--terminate).
func startTPM(ctx context.Context, state string) (string, func(), error) {
	bin, err := exec.LookPath("swtpm")
	if err != nil {
		return "", nil, fmt.Errorf("swtpm not found (apt-get install swtpm): %w", spec.ErrNotFound)
	}
	abs, err := filepath.Abs(state)
	if err != nil {
		return "", nil, err
	}
	sock := filepath.Join(abs, stateSocket)
	os.Remove(sock)
	cmd := exec.CommandContext(ctx, bin, "socket", "--tpm2", "--tpmstate", "dir="+filepath.Join(abs, stateTPM),
		"--ctrl", "type=unixio,path="+sock+",mode=0600", "--terminate")
	out := &tailBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("swtpm: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		select {
		case err := <-exited:
			return "", nil, fmt.Errorf("swtpm exited (%v): %s (another coffer vm on the same --state?)", err, lastLines(out.Bytes(), 3))
		case <-ctx.Done():
			return "", nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			return "", nil, errors.New("swtpm: its control socket did not appear within 10 s")
		}
	}
	stop := func() {
		select {
		case <-exited:
		case <-time.After(2 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		os.Remove(sock)
	}
	return sock, stop, nil
}
