package main

// Attacks of security review 3 (issue 18) on the broker, its stores and
// the image policy: P9, W3 and the 0644 admin token. Each runs the coffer
// binary under test against real processes on 127.0.0.1.

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func init() {
	register((*env).policyScopeDockerHub, (*env).adminTokenReplayAfterRestart, (*env).adminTokenFileMode)
}

// r3bCmdEnv is cmd with extra environment variables.
func (e *env) r3bCmdEnv(timeout time.Duration, extra []string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := exec.CommandContext(ctx, e.coffer, args...)
	c.Dir, c.Env = e.dir, append(os.Environ(), extra...)
	out, err := c.CombinedOutput()
	if ctx.Err() != nil {
		return string(out), fmt.Errorf("killed after %v", timeout)
	}
	return string(out), err
}

// P9: a containers-policy.json scope written as containers/image names
// Docker Hub ("docker.io/myorg") never matched coffer's
// "index.docker.io/…" candidates, so its sigstoreSigned requirement was
// skipped and a permissive default let an unsigned image through. Docker
// Hub is played by an in-process registry behind a CONNECT proxy that
// terminates TLS for index.docker.io with a test CA (HTTPS_PROXY,
// SSL_CERT_FILE): coffer speaks to "docker.io" exactly as it would for
// real, and nothing leaves 127.0.0.1.
func (e *env) policyScopeDockerHub() result {
	r := result{id: "P9", name: "docker.io policy scope skipped"}
	hub, err := startFakeHub(e.dir)
	if err != nil {
		r.observed = "setup: " + err.Error()
		return r
	}
	defer hub.close()
	for _, repo := range []string{"myorg/app:1", "other/app:1"} {
		if err := hub.pushRandom(repo); err != nil {
			r.observed = "setup: " + err.Error()
			return r
		}
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	pub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	pol := filepath.Join(e.dir, "p9-policy.json")
	doc := fmt.Sprintf(`{"default": [{"type": "insecureAcceptAnything"}], "transports": {"docker": {"docker.io/myorg": [{"type": "sigstoreSigned", "keyData": %q}]}}}`,
		base64.StdEncoding.EncodeToString(pub))
	if err := os.WriteFile(pol, []byte(doc), 0o600); err != nil {
		r.observed = "setup: " + err.Error()
		return r
	}
	envs := []string{"HTTPS_PROXY=" + hub.proxyURL, "https_proxy=" + hub.proxyURL, "NO_PROXY=", "no_proxy=", "SSL_CERT_FILE=" + hub.caFile}
	// The control: outside the scope, the permissive default admits the
	// unsigned image (pull warns), so the fake Docker Hub is reachable.
	if out, err := e.r3bCmdEnv(30*time.Second, envs, "pull", "--policy", pol, "docker://docker.io/other/app:1", filepath.Join(e.dir, "p9-control")); err != nil {
		r.observed = "setup: the control image outside the scope was refused: " + r3bFirstLine(out)
		return r
	}
	vout, verr := e.r3bCmdEnv(30*time.Second, envs, "verify", "--policy", pol, "docker://docker.io/myorg/app:1")
	pout, perr := e.r3bCmdEnv(30*time.Second, envs, "pull", "--policy", pol, "docker://myorg/app:1", filepath.Join(e.dir, "p9-rootfs"))
	_, statErr := os.Stat(filepath.Join(e.dir, "p9-rootfs"))
	r.ok = verr != nil && perr != nil && strings.Contains(vout, "sigstoreSigned") && strings.Contains(pout, "sigstoreSigned") && os.IsNotExist(statErr)
	r.observed = fmt.Sprintf("verify docker.io/myorg/app:1: %s; pull myorg/app:1: %s", r3bOutcome(vout, verr), r3bOutcome(pout, perr))
	return r
}

// W3 (broker side): a single-use admin token replayed after `kbs serve`
// over the fs store restarted, for the rest of its lifetime.
func (e *env) adminTokenReplayAfterRestart() result {
	r := result{id: "W3", name: "admin jti replay after restart"}
	repo := filepath.Join(e.dir, "w3-repo")
	addr := freeAddr()
	start := func() (*exec.Cmd, error) {
		c := exec.Command(e.coffer, "kbs", "serve", "--listen", addr, "--repository", repo, "--admin-public-key", e.adminKey+".pub")
		c.Stdout, c.Stderr = io.Discard, io.Discard
		if err := c.Start(); err != nil {
			return nil, err
		}
		return c, waitListening(addr)
	}
	stop := func(c *exec.Cmd) {
		_ = c.Process.Signal(syscall.SIGTERM)
		_ = c.Wait()
	}
	tok, owner, evil := filepath.Join(e.dir, "w3.tok"), filepath.Join(e.dir, "w3-owner"), filepath.Join(e.dir, "w3-evil")
	_ = os.WriteFile(owner, []byte("owner-key-owner-key-owner-key-32"), 0o600)
	_ = os.WriteFile(evil, []byte("attacker-key-attacker-key-key-32"), 0o600)
	minted, err := e.cmd(10*time.Second, "kbs", "admin-token", "--admin-key", e.adminKey, "--ttl", "10m")
	if err != nil {
		r.observed = "setup: admin-token: " + r3bFirstLine(minted)
		return r
	}
	_ = os.WriteFile(tok, []byte(minted), 0o600)
	set := func(file string) (string, error) {
		return e.cmd(10*time.Second, "kbs", "set-resource", "--url", "http://"+addr, "--admin-token", tok, "--path", "default/image_key/w3", "--resource-file", file)
	}
	c, err := start()
	if err != nil {
		r.observed = "setup: " + err.Error()
		return r
	}
	if out, err := set(owner); err != nil {
		stop(c)
		r.observed = "setup: first write: " + r3bFirstLine(out)
		return r
	}
	stop(c)
	if c, err = start(); err != nil {
		r.observed = "setup: restart: " + err.Error()
		return r
	}
	out, err := set(evil)
	stop(c)
	stored, _ := os.ReadFile(filepath.Join(repo, "default", "image_key", "w3"))
	r.ok = err != nil && strings.Contains(out, "jti replay") && string(stored) == "owner-key-owner-key-owner-key-32"
	r.observed = fmt.Sprintf("replay after restart: %s; resource holds the owner's key: %v", r3bOutcome(out, err), string(stored) == "owner-key-owner-key-owner-key-32")
	return r
}

// The admin token went to stdout only, so `> a.tok` left a bearer
// credential 0644; --out writes it 0600 and never over an existing file
// (here the admin key itself) without --force.
func (e *env) adminTokenFileMode() result {
	r := result{id: "TOK", name: "admin token file 0644"}
	tok := filepath.Join(e.dir, "tok-mode.tok")
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	if out, err := e.cmd(10*time.Second, "kbs", "admin-token", "--admin-key", e.adminKey, "--out", tok); err != nil {
		r.observed = "admin-token --out: " + r3bFirstLine(out)
		return r
	}
	st, err := os.Stat(tok)
	if err != nil {
		r.observed = err.Error()
		return r
	}
	before, _ := os.ReadFile(e.adminKey)
	out, clobErr := e.cmd(10*time.Second, "kbs", "admin-token", "--admin-key", e.adminKey, "--out", e.adminKey)
	after, _ := os.ReadFile(e.adminKey)
	r.ok = st.Mode().Perm() == 0o600 && clobErr != nil && bytes.Equal(before, after)
	r.observed = fmt.Sprintf("--out file mode %v; --out onto the admin key: %s, key unchanged: %v", st.Mode().Perm(), r3bOutcome(out, clobErr), bytes.Equal(before, after))
	return r
}

func r3bOutcome(out string, err error) string {
	if err == nil {
		return "accepted"
	}
	return "refused (" + r3bFirstLine(out) + ")"
}

func r3bFirstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return s
}

// fakeHub is Docker Hub on 127.0.0.1: a registry served over TLS (a test
// CA's certificate for index.docker.io) to whatever a CONNECT proxy hands
// it, and over plain HTTP for pushing.
type fakeHub struct {
	proxyURL, caFile, plain string
	closers                 []func()
}

func (h *fakeHub) close() {
	for _, c := range h.closers {
		c()
	}
}

func (h *fakeHub) pushRandom(repo string) error {
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	body := []byte("#!/bin/sh\necho unsigned\n")
	_ = tw.WriteHeader(&tar.Header{Name: "app", Mode: 0o755, Size: int64(len(body)), Typeflag: tar.TypeReg})
	_, _ = tw.Write(body)
	_ = tw.Close()
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), static.NewLayer(tb.Bytes(), types.OCIUncompressedLayer))
	if err != nil {
		return err
	}
	tag, err := name.NewTag(h.plain+"/"+repo, name.Insecure)
	if err != nil {
		return err
	}
	return remote.Write(tag, img)
}

func startFakeHub(dir string) (*fakeHub, error) {
	h := &fakeHub{}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "coffer attack CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2),
		Subject: pkix.Name{CommonName: "index.docker.io"}, DNSNames: []string{"index.docker.io"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	h.caFile = filepath.Join(dir, "fakehub-ca.pem")
	if err := os.WriteFile(h.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		return nil, err
	}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))

	plainLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	plain := &http.Server{Handler: reg, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = plain.Serve(plainLn) }()
	h.plain = plainLn.Addr().String()
	h.closers = append(h.closers, func() { plain.Close() })

	conns := &hubConnListener{c: make(chan net.Conn), done: make(chan struct{})}
	tlsSrv := &http.Server{Handler: reg, ReadHeaderTimeout: 10 * time.Second, TLSConfig: &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}}, MinVersion: tls.VersionTLS12}}
	go func() { _ = tlsSrv.ServeTLS(conns, "", "") }()
	h.closers = append(h.closers, func() { tlsSrv.Close() })

	proxyLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		h.close()
		return nil, err
	}
	proxy := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect || r.Host != "index.docker.io:443" {
			http.Error(w, "this proxy only plays index.docker.io:443", http.StatusForbidden)
			return
		}
		hj, ok := w.(http.Hijacker)
		if !ok {
			http.Error(w, "no hijack", http.StatusInternalServerError)
			return
		}
		c, buf, err := hj.Hijack()
		if err != nil {
			return
		}
		if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil || buf.Reader.Buffered() > 0 {
			c.Close()
			return
		}
		conns.push(c)
	})}
	go func() { _ = proxy.Serve(proxyLn) }()
	h.closers = append(h.closers, func() { proxy.Close() })
	h.proxyURL = "http://" + proxyLn.Addr().String()
	return h, nil
}

// hubConnListener is a net.Listener fed with the connections a proxy hijacked.
type hubConnListener struct {
	c    chan net.Conn
	done chan struct{}
	once sync.Once
}

func (l *hubConnListener) push(c net.Conn) {
	select {
	case l.c <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *hubConnListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.c:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *hubConnListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *hubConnListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
