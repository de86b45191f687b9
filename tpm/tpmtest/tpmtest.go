// Package tpmtest gives tests a TPM 2.0 without hardware: Debian's swtpm
// on a loopback socket. (tpmsim has an in-process one.)
package tpmtest

import (
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/internal/testutil"
)

// Swtpm is a swtpm process serving a fresh TPM 2.0 on loopback TCP.
type Swtpm struct {
	// Addr is its address for tpm.Open: tcp://127.0.0.1:PORT.
	Addr string
	// TCTI is its address for tpm2-tools (TPM2TOOLS_TCTI): the swtpm TCTI
	// expects the control port right after the server port.
	TCTI string
}

// StartSwtpm runs swtpm (socket interface, state in a temp dir, started
// with --flags not-need-init,startup-clear so no control command is needed)
// until the test ends. Without swtpm the test is skipped, or fails under
// COFFER_REQUIRE_EXTERNAL=1.
func StartSwtpm(t testing.TB) Swtpm {
	t.Helper()
	bin := testutil.RequireTool(t, "swtpm")
	dir := t.TempDir()
	for range 20 {
		port, ok := freePortPair(t)
		if !ok {
			continue
		}
		cmd := exec.Command(bin, "socket", "--tpm2",
			"--tpmstate", "dir="+dir,
			"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port),
			"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port+1),
			"--flags", "not-need-init,startup-clear",
			"--log", "file="+filepath.Join(dir, "swtpm.log"))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting swtpm: %v", err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		if waitListening(addr, exited) {
			t.Cleanup(func() {
				cmd.Process.Kill()
				<-exited
			})
			return Swtpm{Addr: "tcp://" + addr, TCTI: fmt.Sprintf("swtpm:host=127.0.0.1,port=%d", port)}
		}
		cmd.Process.Kill()
		<-exited
		t.Logf("swtpm on port %d did not start (port taken?): %s", port, stderr.String())
	}
	t.Fatal("swtpm did not start")
	return Swtpm{}
}

// freePortPair returns a port p such that p and p+1 were free.
func freePortPair(t testing.TB) (int, bool) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port+1))
	l.Close()
	if err != nil {
		return 0, false
	}
	l2.Close()
	return port, true
}

func waitListening(addr string, exited <-chan struct{}) bool {
	for range 200 {
		select {
		case <-exited:
			return false
		default:
		}
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return true
		}
		time.Sleep(25 * time.Millisecond)
	}
	return false
}
