package demo

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/coffer-dev/coffer/secl/wls"
)

// ErrNoSwtpm: swtpm is not installed, so the VM-image chapter has no TPM.
var ErrNoSwtpm = errors.New("swtpm is not installed (Debian: apt-get install swtpm)")

// Swtpm is a swtpm process serving a fresh TPM 2.0 on loopback.
type Swtpm struct {
	Addr string // tcp://127.0.0.1:PORT for --tpm
	cmd  *exec.Cmd
	done chan struct{}
}

// StartSwtpm runs swtpm with its state under dir until Stop.
func StartSwtpm(ctx context.Context, dir string) (*Swtpm, error) {
	bin, err := exec.LookPath("swtpm")
	if err != nil {
		return nil, ErrNoSwtpm
	}
	state := filepath.Join(dir, "swtpm")
	if err := os.MkdirAll(state, 0o700); err != nil {
		return nil, err
	}
	for range 10 {
		port, err := freePortPair()
		if err != nil {
			continue
		}
		cmd := exec.CommandContext(ctx, bin, "socket", "--tpm2", "--tpmstate", "dir="+state,
			"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port),
			"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port+1),
			"--flags", "not-need-init,startup-clear")
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("starting swtpm: %w", err)
		}
		s := &Swtpm{Addr: fmt.Sprintf("tcp://127.0.0.1:%d", port), cmd: cmd, done: make(chan struct{})}
		go func() { cmd.Wait(); close(s.done) }()
		if s.waitListening(port) {
			return s, nil
		}
		s.Stop()
	}
	return nil, errors.New("swtpm did not start")
}

// waitListening waits up to 5 s for swtpm's server port; false when
// swtpm exited (its port was taken) or never listened.
func (s *Swtpm) waitListening(port int) bool {
	for range 200 {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return true
		}
		select {
		case <-s.done:
			return false
		case <-time.After(25 * time.Millisecond):
		}
	}
	return false
}

// Stop ends the swtpm process.
func (s *Swtpm) Stop() {
	s.cmd.Process.Kill()
	<-s.done
}

func freePortPair() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port+1))
	l.Close()
	if err != nil {
		return 0, err
	}
	l2.Close()
	return port, nil
}

// StartWLS starts a workload service on loopback with its store under dir.
func StartWLS(ctx context.Context, dir, signerCert, adminPub string) (*Broker, error) {
	cfg := wls.Config{Listen: "127.0.0.1:0", DB: filepath.Join(dir, "wls"), SignerCerts: []string{signerCert}, AdminPublicKeys: []string{adminPub}}
	ready := make(chan net.Addr, 1)
	b := &Broker{done: make(chan error, 1)}
	go func() { b.done <- wls.Serve(ctx, cfg, slog.New(slog.DiscardHandler), func(a net.Addr) { ready <- a }) }()
	select {
	case a := <-ready:
		b.URL = "http://" + a.String()
		return b, nil
	case err := <-b.done:
		return nil, fmt.Errorf("starting the demo workload service: %w", err)
	case <-time.After(10 * time.Second):
		return nil, errors.New("starting the demo workload service: timed out")
	}
}

// WriteFlavorSigner writes an ECDSA P-384 flavor signing key (PKCS#8 PEM,
// 0600) and its self-signed certificate.
func WriteFlavorSigner(keyFile, certFile string) error {
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "coffer demo flavor signer"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	cder, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		return err
	}
	return os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cder}), 0o644)
}
