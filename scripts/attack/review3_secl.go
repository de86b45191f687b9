package main

// Review 3 (issue 18), the SecL path and the key transfer: each attack runs
// against a SecL world made of real coffer processes (kbs serve with a
// token key, wls serve, wla decrypt-image/keyprovider) and a swtpm host.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coffer-dev/coffer/filecrypt"
	"github.com/coffer-dev/coffer/internal/demo"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/kbs/token"
	"github.com/coffer-dev/coffer/secl/flavor"
	"github.com/coffer-dev/coffer/secl/wla"
	"github.com/coffer-dev/coffer/secl/wlsclient"
	"github.com/coffer-dev/coffer/secl/wpm"
	"github.com/coffer-dev/coffer/tpm"
)

func init() {
	// The W25 attack re-runs this program as user nobody to try the
	// keyprovider's socket: that child only dials and reports.
	if sock := os.Getenv("COFFER_ATTACK_DIAL_UNIX"); sock != "" {
		if c, err := net.Dial("unix", sock); err != nil {
			fmt.Println("REFUSED", err)
		} else {
			c.Close()
			fmt.Println("CONNECTED")
		}
		os.Exit(0)
	}
	register(e3("W22", attackW22), e3("T1", attackT1), e3("W25", attackW25), e3("W20", attackW20), e3("W18", attackW18),
		e3("W21", attackW21), e3("W24", attackW24), e3("W12", attackW12), e3("W26", attackW26), e3("W3", attackW3WLS),
		e3("W-dup", attackDupFlavor), e3("W-tx2", attackTransferTwice))
}

// seclWorld is one owner (broker, flavor signer), one provider (WLS) and
// one host (swtpm), set up with the coffer CLI as the docs say.
type seclWorld struct {
	e                        *env
	dir                      string
	tpm                      string // host TPM address
	kbs, wls                 string // URLs
	wlsAddr, wlsDB           string
	image, flavorID, keyID   string
	enc, plain               string
	procs                    []*exec.Cmd
	wlsProc                  *exec.Cmd
	sw                       *demo.Swtpm
	log                      *os.File
	signerKey                string
	kbsAdmin, wlsAdmin       string
	brokerPub, signerCert    string
	flavorDoc                []byte
	flavorLabel, brokerToken string
}

// e3 runs an attack in a fresh SecL world, stopped afterwards.
func e3(id string, a func(*seclWorld) result) func(*env) result {
	return func(e *env) result {
		w, err := e.newSecL()
		defer w.stop()
		if err != nil {
			return result{id: id, name: "SecL world", ok: false, observed: "setup failed: " + clip(err.Error(), 200)}
		}
		return a(w)
	}
}

func (w *seclWorld) p(n string) string { return filepath.Join(w.dir, n) }

func (w *seclWorld) stop() {
	for _, c := range w.procs {
		_ = c.Process.Signal(syscall.SIGTERM)
		_ = c.Wait()
	}
	if w.sw != nil {
		w.sw.Stop()
	}
	if w.log != nil {
		w.log.Close()
	}
}

// run runs coffer and returns its output (stdout and stderr together).
func (w *seclWorld) run(args ...string) (string, error) { return w.e.cmd(60*time.Second, args...) }

// start starts a coffer daemon listening on addr.
func (w *seclWorld) start(addr string, args ...string) (*exec.Cmd, error) {
	c := exec.Command(w.e.coffer, args...)
	c.Stdout, c.Stderr = w.log, w.log
	if err := c.Start(); err != nil {
		return nil, err
	}
	w.procs = append(w.procs, c)
	return c, waitListening(addr)
}

func (w *seclWorld) startWLS() error {
	c, err := w.start(w.wlsAddr, "wls", "serve", "--listen", w.wlsAddr, "--db", w.wlsDB, "--flavor-signer-cert", w.signerCert,
		"--admin-public-key", w.wlsAdmin+".pub")
	w.wlsProc = c
	return err
}

func (w *seclWorld) stopWLS() {
	if w.wlsProc != nil {
		_ = w.wlsProc.Process.Signal(syscall.SIGTERM)
		_ = w.wlsProc.Wait()
		w.wlsProc = nil
	}
}

func writeTokenKey(key, pub string) error {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	pder, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pder}), 0o644)
}

func (e *env) newSecL() (*seclWorld, error) {
	dir, err := os.MkdirTemp(e.dir, "secl-")
	if err != nil {
		return &seclWorld{}, err
	}
	w := &seclWorld{e: e, dir: dir, image: "3f2e1d0c-9b8a-4776-8554-433221100fed", flavorLabel: "vm"}
	if w.log, err = os.Create(w.p("daemons.log")); err != nil {
		return w, err
	}
	if w.sw, err = demo.StartSwtpm(context.Background(), dir); err != nil {
		return w, err
	}
	w.tpm = w.sw.Addr
	w.kbsAdmin, w.wlsAdmin = w.p("kbs-admin.key"), w.p("wls-admin.key")
	w.brokerToken, w.brokerPub = w.p("token.pem"), w.p("token.pub")
	w.signerKey, w.signerCert = w.p("signer.pem"), w.p("signer.crt")
	if err := writeTokenKey(w.brokerToken, w.brokerPub); err != nil {
		return w, err
	}
	if err := demo.WriteFlavorSigner(w.signerKey, w.signerCert); err != nil {
		return w, err
	}
	for _, k := range []string{w.kbsAdmin, w.wlsAdmin} {
		if out, err := w.run("kbs", "keygen-admin", "--out", k); err != nil {
			return w, fmt.Errorf("keygen-admin: %v %s", err, out)
		}
	}
	kbsAddr := freeAddr()
	w.kbs = "http://" + kbsAddr
	if _, err := w.start(kbsAddr, "kbs", "serve", "--listen", kbsAddr, "--repository", w.p("repo"), "--admin-public-key", w.kbsAdmin+".pub",
		"--token-key", w.brokerToken); err != nil { // the default deployment: the broker does not trust the WLS's X-Forwarded-For
		return w, err
	}
	plain := make([]byte, 8<<20)
	rand.Read(plain)
	w.plain, w.enc = w.p("disk.qcow2"), w.p("disk.enc")
	if err := os.WriteFile(w.plain, plain, 0o600); err != nil {
		return w, err
	}
	out, err := w.run("wpm", "create-image-flavor", "-l", w.flavorLabel, "-i", w.plain, "-e", w.enc, "-o", w.p("flavor.json"),
		"--kbs", w.kbs, "--admin-key", w.kbsAdmin, "--signing-key", w.signerKey)
	if err != nil {
		return w, fmt.Errorf("create-image-flavor: %v %s", err, out)
	}
	w.flavorID = strings.TrimSpace(lastLine(out))
	if w.flavorDoc, err = os.ReadFile(w.p("flavor.json")); err != nil {
		return w, err
	}
	_, f, err := flavor.Parse(w.flavorDoc)
	if err != nil {
		return w, err
	}
	if _, w.keyID, err = flavor.ParseKeyURL(f.Encryption.KeyURL); err != nil {
		return w, err
	}
	w.wlsAddr, w.wlsDB = freeAddr(), w.p("wls-db")
	w.wls = "http://" + w.wlsAddr
	if err := w.startWLS(); err != nil {
		return w, err
	}
	wadm := []string{"--url", w.wls, "--admin-key", w.wlsAdmin}
	kadm := []string{"--url", w.kbs, "--admin-key", w.kbsAdmin}
	if out, err := w.run(append([]string{"wls", "add-flavor", w.p("flavor.json")}, wadm...)...); err != nil {
		return w, fmt.Errorf("add-flavor: %v %s", err, out)
	}
	if out, err := w.run(append([]string{"wls", "add-image", "--image-id", w.image, "--flavor-id", w.flavorID}, wadm...)...); err != nil {
		return w, fmt.Errorf("add-image: %v %s", err, out)
	}
	ak, err := w.run("tpm", "ak-public", "--tpm", w.tpm)
	if err != nil {
		return w, fmt.Errorf("ak-public: %v %s", err, ak)
	}
	for _, args := range [][]string{
		append([]string{"kbs", "set-resource-policy", "--affirming"}, kadm...),
		append(append([]string{"kbs", "set-reference-value"}, kadm...), "tpm_ak_public", strings.TrimSpace(ak)),
		append(append([]string{"kbs", "set-reference-value"}, kadm...), "tpm_pcr00", strings.Repeat("0", 64)),
	} {
		if out, err := w.run(args...); err != nil {
			return w, fmt.Errorf("%s: %v %s", args[1], err, out)
		}
	}
	return w, nil
}

// decrypt runs the host's `wla decrypt-image` as the docs say (every anchor given).
func (w *seclWorld) decrypt(wlsURL, in, out string, extra ...string) (string, error) {
	args := []string{"wla", "decrypt-image", "--wls", wlsURL, "--image-id", w.image, "--tpm", w.tpm,
		"--flavor-signer-cert", w.signerCert, "--broker-key", w.brokerPub, "--expect-label", w.flavorLabel,
		"--insecure-loopback-http", "-i", in, "-o", out}
	return w.run(append(args, extra...)...)
}

func sameFile(a, b string) bool {
	x, err1 := os.ReadFile(a)
	y, err2 := os.ReadFile(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// bindingPublic reads the host's binding public key (anyone can: it is public).
func (w *seclWorld) bindingPublic() (*rsa.PublicKey, error) {
	t, err := tpm.Open(context.Background(), w.tpm)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	return t.BindingPublic(context.Background())
}

func serve(h http.Handler) (string, func()) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	s := &http.Server{Handler: h}
	go s.Serve(l)
	return "http://" + l.Addr().String(), func() { s.Close() }
}

// W22: a fake WLS answers with an unsigned flavor naming the attacker's
// encrypted file and a key the attacker wrapped to the host's binding key.
func attackW22(w *seclWorld) result {
	r := result{id: "W22", name: "fake WLS: unsigned flavor + own key"}
	pub, err := w.bindingPublic()
	if err != nil {
		r.observed = "binding key: " + err.Error()
		return r
	}
	key := make([]byte, 32)
	rand.Read(key)
	evilPlain, evilEnc := w.p("evil.img"), w.p("evil.enc")
	os.WriteFile(evilPlain, []byte("the attacker's image\n"), 0o600)
	if _, err := filecrypt.EncryptFile(context.Background(), evilPlain, evilEnc, key); err != nil {
		r.observed = err.Error()
		return r
	}
	ct, _ := os.ReadFile(evilEnc)
	d := sha512.Sum384(ct)
	_, owner, _ := flavor.Parse(w.flavorDoc)
	f, _ := flavor.New(flavor.PartImage, w.flavorLabel, owner.Encryption.KeyURL, base64.StdEncoding.EncodeToString(d[:]))
	f.Meta.ID = owner.Meta.ID
	fj, _ := json.Marshal(f)
	wrapped, _ := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, key, []byte(protocol.TPMOAEPLabel))
	fake, stop := serve(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodGet {
			n := make([]byte, 32)
			rand.Read(n)
			json.NewEncoder(rw).Encode(wlsclient.Challenge{Tee: protocol.TeeTPM, Nonce: base64.StdEncoding.EncodeToString(n), Session: "x"})
			return
		}
		json.NewEncoder(rw).Encode(wlsclient.FlavorKey{Flavor: fj, Key: wrapped})
	}))
	defer stop()
	out := w.p("w22.img")
	o1, err1 := w.decrypt(fake, evilEnc, out)
	wrote := exists(out)
	// the same host with no anchor configured
	o2, err2 := w.run("wla", "decrypt-image", "--wls", fake, "--image-id", w.image, "--tpm", w.tpm, "-i", evilEnc, "-o", out)
	lines := strings.Count(strings.TrimSpace(o2), "\n") + 1
	r.ok = err1 != nil && !wrote && !exists(out) && exitCode(err2) == 2 && strings.Contains(o2, "--flavor-signer-cert") && lines == 1
	r.observed = fmt.Sprintf("exit %d, output written %v: %s; no anchor: exit %d, %d line: %s",
		exitCode(err1), wrote, clip(lastLine(o1), 110), exitCode(err2), lines, clip(lastLine(o2), 90))
	return r
}

// T1: the transfer key fetched as a plain RCAR resource by the registered host.
func attackT1(w *seclWorld) result {
	r := result{id: "T1", name: "secl/keys/<id> as a plain resource"}
	c := exec.Command(w.e.coffer, "kbs", "get-resource", "--url", w.kbs, "--tee", "tpm", "--tpm", w.tpm, "--path", "secl/keys/"+w.keyID)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	r.ok = err != nil && stdout.Len() == 0
	r.observed = fmt.Sprintf("exit %d, %d bytes on stdout: %s", exitCode(err), stdout.Len(), clip(lastLine(stderr.String()), 140))
	return r
}

// W25: user nobody (no TPM access) reaches the host keyprovider.
func attackW25(w *seclWorld) result {
	r := result{id: "W25", name: "keyprovider reachable by nobody"}
	sockDir, err := os.MkdirTemp("", "coffer-attack-kp-")
	if err != nil {
		r.observed = err.Error()
		return r
	}
	defer os.RemoveAll(sockDir)
	os.Chmod(sockDir, 0o755) // the socket's own mode must guard it
	sock := filepath.Join(sockDir, "kp.sock")
	c := exec.Command(w.e.coffer, "wla", "keyprovider", "--wls", w.wls, "--tpm", w.tpm, "--broker-key", w.brokerPub,
		"--insecure-loopback-http", "--listen", "unix://"+sock)
	c.Stdout, c.Stderr = w.log, w.log
	if err := c.Start(); err != nil {
		r.observed = err.Error()
		return r
	}
	w.procs = append(w.procs, c)
	for i := 0; i < 200 && !exists(sock); i++ {
		time.Sleep(25 * time.Millisecond)
	}
	fi, err := os.Stat(sock)
	if err != nil {
		r.observed = "no socket: " + err.Error()
		return r
	}
	mode := fi.Mode().Perm()
	asNobody := "not root: skipped"
	if os.Geteuid() == 0 {
		self, _ := os.Executable()
		bin := filepath.Join(sockDir, "dial")
		b, _ := os.ReadFile(self)
		os.WriteFile(bin, b, 0o755)
		d := exec.Command(bin)
		d.Env = []string{"COFFER_ATTACK_DIAL_UNIX=" + sock}
		d.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, _ := d.CombinedOutput()
		asNobody = strings.TrimSpace(string(out))
	}
	// TCP without a token file: refused at start
	tcp, terr := w.run("wla", "keyprovider", "--wls", w.wls, "--tpm", w.tpm, "--broker-key", w.brokerPub, "--insecure-loopback-http", "--listen", freeAddr())
	r.ok = mode == 0o600 && (strings.HasPrefix(asNobody, "REFUSED") || os.Geteuid() != 0) && terr != nil && strings.Contains(tcp, "token file")
	r.observed = fmt.Sprintf("socket mode %o; as nobody: %s; TCP without a token: exit %d", mode, clip(asNobody, 90), exitCode(terr))
	return r
}

// W20: 60 unauthenticated loopback addresses flood the WLS for challenges
// while the registered host decrypts (default deployment: kbs serve's and
// wls serve's default limits, no --trusted-proxy).
func attackW20(w *seclWorld) result {
	r := result{id: "W20", name: "challenge flood vs a host's decrypt"}
	ctx, cancel := context.WithCancel(context.Background())
	var got, sent atomic.Int64
	var wg sync.WaitGroup
	for i := range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i))}}
			hc := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}, Timeout: 5 * time.Second}
			for ctx.Err() == nil {
				sent.Add(1)
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, w.wls+"/wls/images/"+w.image+"/flavor-key", nil)
				resp, err := hc.Do(req)
				if err != nil {
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					got.Add(1)
				} else {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	var fails []string
	for i := range 2 {
		out := w.p(fmt.Sprintf("w20-%d.img", i))
		o, err := w.decrypt(w.wls, w.enc, out)
		if err != nil || !sameFile(out, w.plain) {
			fails = append(fails, clip(lastLine(o), 100))
		}
	}
	cancel()
	wg.Wait()
	r.ok = len(fails) == 0 && got.Load() >= 60
	r.observed = fmt.Sprintf("%d flood requests, %d challenges granted to the flood; host decrypts failed: %d %v", sent.Load(), got.Load(), len(fails), fails)
	return r
}

// signFlavor signs f with the owner's flavor signer (the W18/W12 premise:
// a flavor of the configured signer).
func (w *seclWorld) signFlavor(f *flavor.Flavor) ([]byte, error) {
	k, err := wpm.LoadSigningKey(w.signerKey)
	if err != nil {
		return nil, err
	}
	return flavor.Sign(f, k)
}

func (w *seclWorld) adminPost(method, path string, body []byte, tok string) (int, string) {
	req, _ := http.NewRequest(method, w.wls+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if tok == "" {
		k, _ := os.ReadFile(w.wlsAdmin)
		key, _ := parseEd25519(k)
		tok = token.SignAdmin(key, "", time.Now(), token.AdminClientTTL)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// W18: a broker a stored flavor names redirects the WLS to an internal service.
func attackW18(w *seclWorld) result {
	r := result{id: "W18", name: "broker redirect to an internal service"}
	var internalHits atomic.Int32
	internal, stop1 := serve(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		internalHits.Add(1)
		io.WriteString(rw, `{"detail":"INTERNAL-SECRET"}`)
	}))
	defer stop1()
	broker, stop2 := serve(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		http.Redirect(rw, req, internal+"/admin", http.StatusTemporaryRedirect)
	}))
	defer stop2()
	f, _ := flavor.New(flavor.PartImage, "redirect", flavor.KeyURL(broker, "2b7a3e1c-6a2e-4b8e-9c1f-0d4f5e6a7b8c"), "")
	doc, err := w.signFlavor(f)
	if err != nil {
		r.observed = err.Error()
		return r
	}
	const img = "5a1e2d3c-4b5a-4968-8776-655443322155"
	c1, b1 := w.adminPost(http.MethodPost, wlsclient.PathFlavors, doc, "")
	img1, _ := json.Marshal(wlsclient.Image{ID: img, FlavorIDs: []string{f.Meta.ID}})
	c2, b2 := w.adminPost(http.MethodPost, wlsclient.PathImages, img1, "")
	if c1 != 201 || c2 != 201 {
		r.observed = fmt.Sprintf("setup: %d %s / %d %s", c1, b1, c2, b2)
		return r
	}
	resp, err := http.Get(w.wls + "/wls/images/" + img + "/flavor-key")
	if err != nil {
		r.observed = err.Error()
		return r
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	r.ok = internalHits.Load() == 0 && !strings.Contains(string(body), "SECRET") && resp.StatusCode/100 != 2
	r.observed = fmt.Sprintf("internal service hit %d times; host got HTTP %d %s", internalHits.Load(), resp.StatusCode, clip(detail(body), 100))
	return r
}

// W21: 1,000 stored flavors; refused key-by-URL requests, timed.
func attackW21(w *seclWorld) result {
	r := result{id: "W21", name: "refused key-by-URL, 1,000 flavors"}
	for i := range 999 {
		f, _ := flavor.New(flavor.PartImage, fmt.Sprintf("vm%d", i), flavor.KeyURL(fmt.Sprintf("https://kbs%d.example", i), "2b7a3e1c-6a2e-4b8e-9c1f-0d4f5e6a7b8c"), "")
		doc, err := w.signFlavor(f)
		if err != nil {
			r.observed = err.Error()
			return r
		}
		if code, b := w.adminPost(http.MethodPost, wlsclient.PathFlavors, doc, ""); code != 201 {
			r.observed = fmt.Sprintf("upload %d: HTTP %d %s", i, code, b)
			return r
		}
	}
	body := []byte(`{"key_url":"` + flavor.KeyURL("https://not-stored.example", "2b7a3e1c-6a2e-4b8e-9c1f-0d4f5e6a7b8c") + `"}`)
	var times []time.Duration
	codes := map[int]int{}
	for range 40 {
		t0 := time.Now()
		resp, err := http.Post(w.wls+wlsclient.PathKeyChallenge, "application/json", bytes.NewReader(body))
		if err != nil {
			r.observed = err.Error()
			return r
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		times = append(times, time.Since(t0))
		codes[resp.StatusCode]++
		time.Sleep(210 * time.Millisecond) // under the WLS's 5/s per address
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	med := times[len(times)/2]
	r.ok = med < 10*time.Millisecond && codes[http.StatusForbidden] == len(times)
	r.observed = fmt.Sprintf("1,000 flavors stored; 40 refused requests (HTTP %v): median %v, max %v (round trip)", codes, med.Round(time.Microsecond), times[len(times)-1].Round(time.Microsecond))
	return r
}

// W24: an on-path relay rewrites /wls/images/X/… to /wls/images/Y/….
func attackW24(w *seclWorld) result {
	r := result{id: "W24", name: "relay swaps image X for image Y"}
	os.WriteFile(w.p("old.qcow2"), []byte("an older release\n"), 0o600)
	out, err := w.run("wpm", "create-image-flavor", "-l", "vm-old", "-i", w.p("old.qcow2"), "-e", w.p("old.enc"), "-o", w.p("old.json"),
		"--kbs", w.kbs, "--admin-key", w.kbsAdmin, "--signing-key", w.signerKey)
	if err != nil {
		r.observed = "create-image-flavor: " + clip(out, 100)
		return r
	}
	fid := strings.TrimSpace(lastLine(out))
	const imageY = "7a1e2d3c-4b5a-4968-8776-655443322177"
	wadm := []string{"--url", w.wls, "--admin-key", w.wlsAdmin}
	if o, err := w.run(append([]string{"wls", "add-flavor", w.p("old.json")}, wadm...)...); err != nil {
		r.observed = o
		return r
	}
	if o, err := w.run(append([]string{"wls", "add-image", "--image-id", imageY, "--flavor-id", fid}, wadm...)...); err != nil {
		r.observed = o
		return r
	}
	relay, stop := serve(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		u := w.wls + strings.Replace(req.URL.Path, w.image, imageY, 1)
		fwd, _ := http.NewRequest(req.Method, u, req.Body)
		fwd.Header = req.Header
		resp, err := http.DefaultClient.Do(fwd)
		if err != nil {
			rw.WriteHeader(502)
			return
		}
		defer resp.Body.Close()
		rw.WriteHeader(resp.StatusCode)
		io.Copy(rw, resp.Body)
	}))
	defer stop()
	o, err := w.decrypt(relay, w.p("old.enc"), w.p("w24.img"))
	r.ok = err != nil && !exists(w.p("w24.img"))
	r.observed = fmt.Sprintf("exit %d, output written %v: %s", exitCode(err), exists(w.p("w24.img")), clip(lastLine(o), 130))
	return r
}

// W12: a configured signer's flavor reusing a stored meta.id.
func attackW12(w *seclWorld) result {
	r := result{id: "W12", name: "flavor id reuse replaces a flavor"}
	_, f, _ := flavor.Parse(w.flavorDoc)
	f.Encryption.KeyURL = flavor.KeyURL("https://other-kbs.example", "3b7a3e1c-6a2e-4b8e-9c1f-0d4f5e6a7b8c")
	doc, err := w.signFlavor(f)
	if err != nil {
		r.observed = err.Error()
		return r
	}
	os.WriteFile(w.p("reuse.json"), doc, 0o600)
	wadm := []string{"--url", w.wls, "--admin-key", w.wlsAdmin}
	o1, err1 := w.run(append([]string{"wls", "add-flavor", w.p("reuse.json")}, wadm...)...)
	resp, err := http.Get(w.wls + "/wls/flavors/" + f.Meta.ID)
	if err != nil {
		r.observed = err.Error()
		return r
	}
	stored, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	unchanged := !bytes.Contains(stored, []byte("other-kbs.example"))
	o2, err2 := w.run(append([]string{"wls", "replace-flavor", w.p("reuse.json")}, wadm...)...)
	logged, _ := os.ReadFile(w.p("daemons.log"))
	audited := bytes.Contains(logged, []byte(`op="replace flavor"`)) && bytes.Contains(logged, []byte("old_key_url="))
	r.ok = err1 != nil && unchanged && err2 == nil && audited
	r.observed = fmt.Sprintf("add-flavor: exit %d (%s), stored flavor unchanged %v; replace-flavor: exit %d %s, audited %v",
		exitCode(err1), clip(lastLine(o1), 70), unchanged, exitCode(err2), clip(strings.TrimSpace(o2), 40), audited)
	return r
}

// W26: kill -9 of `wla decrypt-image` mid-run.
func attackW26(w *seclWorld) result {
	r := result{id: "W26", name: "kill -9 mid decrypt-image"}
	fifo := w.p("in.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		r.observed = err.Error()
		return r
	}
	outDir := w.p("w26")
	os.Mkdir(outDir, 0o700)
	args := []string{"wla", "decrypt-image", "--wls", w.wls, "--image-id", w.image, "--tpm", w.tpm,
		"--flavor-signer-cert", w.signerCert, "--broker-key", w.brokerPub, "--expect-label", w.flavorLabel,
		"--insecure-loopback-http", "-i", fifo, "-o", filepath.Join(outDir, "disk.img")}
	c := exec.Command(w.e.coffer, args...)
	c.Stdout, c.Stderr = w.log, w.log
	if err := c.Start(); err != nil {
		r.observed = err.Error()
		return r
	}
	ct, _ := os.ReadFile(w.enc)
	f, err := os.OpenFile(fifo, os.O_WRONLY, 0) // blocks until the host opened its input: the key is in hand
	if err != nil {
		r.observed = err.Error()
		return r
	}
	f.Write(ct[:len(ct)/2])
	time.Sleep(200 * time.Millisecond)
	midRun := names(outDir)
	c.Process.Signal(syscall.SIGKILL)
	c.Wait()
	f.Close()
	killed := false
	if ws, ok := c.ProcessState.Sys().(syscall.WaitStatus); ok {
		killed = ws.Signaled() && ws.Signal() == syscall.SIGKILL
	}
	after := names(outDir)
	r.ok = killed && len(after) == 0 && len(midRun) == 0
	r.observed = fmt.Sprintf("killed by SIGKILL %v after %d of %d bytes; names mid-run %v, after %v", killed, len(ct)/2, len(ct), midRun, after)
	return r
}

func names(dir string) []string {
	es, _ := os.ReadDir(dir)
	n := []string{}
	for _, e := range es {
		n = append(n, e.Name())
	}
	return n
}

// W3 (WLS): a spent single-use admin token replayed after `wls serve` restarts.
func attackW3WLS(w *seclWorld) result {
	r := result{id: "W3", name: "wls admin token replay after restart"}
	k, _ := os.ReadFile(w.wlsAdmin)
	key, _ := parseEd25519(k)
	tok := token.SignAdmin(key, "", time.Now(), token.AdminClientTTL)
	img := func(id string) []byte {
		b, _ := json.Marshal(wlsclient.Image{ID: id, FlavorIDs: []string{w.flavorID}})
		return b
	}
	c1, _ := w.adminPost(http.MethodPost, wlsclient.PathImages, img("1a1e2d3c-4b5a-4968-8776-655443322101"), tok)
	w.stopWLS()
	if err := w.startWLS(); err != nil {
		r.observed = "restart: " + err.Error()
		return r
	}
	c2, b2 := w.adminPost(http.MethodPost, wlsclient.PathImages, img("1a1e2d3c-4b5a-4968-8776-655443322102"), tok)
	r.ok = c1 == 201 && c2 == http.StatusUnauthorized
	r.observed = fmt.Sprintf("first use HTTP %d; after a restart the same token: HTTP %d %s", c1, c2, clip(detail([]byte(b2)), 80))
	return r
}

// Also fixed: an upload with a duplicate top-level "flavor" (forged first).
func attackDupFlavor(w *seclWorld) result {
	r := result{id: "W-dup", name: "duplicate \"flavor\" member stored"}
	f, _ := flavor.New(flavor.PartImage, "dup", flavor.KeyURL(w.kbs, "2b7a3e1c-6a2e-4b8e-9c1f-0d4f5e6a7b8c"), "")
	doc, err := w.signFlavor(f)
	if err != nil {
		r.observed = err.Error()
		return r
	}
	var sd flavor.Signed
	json.Unmarshal(doc, &sd)
	forged := strings.Replace(string(sd.Flavor), `"dup"`, `"FORGED"`, 1)
	dup := `{"flavor":` + forged + `,"flavor":` + string(sd.Flavor) + `,"signature":"` + sd.Signature + `"}`
	code, body := w.adminPost(http.MethodPost, wlsclient.PathFlavors, []byte(dup), "")
	resp, err := http.Get(w.wls + "/wls/flavors/" + f.Meta.ID)
	if err != nil {
		r.observed = err.Error()
		return r
	}
	served, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	r.ok = !bytes.Contains(served, []byte("FORGED")) && bytes.Count(served, []byte(`"flavor"`)) <= 1
	r.observed = fmt.Sprintf("upload HTTP %d %s; served document holds the forged copy: %v", code, clip(body, 40), bytes.Contains(served, []byte("FORGED")))
	return r
}

// Also fixed: a key transfer repeated within its session.
func attackTransferTwice(w *seclWorld) result {
	r := result{id: "W-tx2", name: "key transfer twice in one session"}
	ch, err := wlsclient.NewClient(w.wls, nil, nil).Challenge(context.Background(), w.image)
	if err != nil {
		r.observed = err.Error()
		return r
	}
	t, err := tpm.Open(context.Background(), w.tpm)
	if err != nil {
		r.observed = err.Error()
		return r
	}
	kr, err := wla.Prove(context.Background(), t, ch)
	t.Close()
	if err != nil {
		r.observed = err.Error()
		return r
	}
	post := func(path string, v any) (int, string) {
		b, _ := json.Marshal(v)
		req, _ := http.NewRequest(http.MethodPost, w.kbs+path, bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		req.AddCookie(&http.Cookie{Name: protocol.SessionCookie, Value: ch.Session})
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(out)
	}
	if c, b := post(protocol.PathAttest, kr.Attestation); c != 200 {
		r.observed = fmt.Sprintf("attest: HTTP %d %s", c, clip(b, 80))
		return r
	}
	path := protocol.PathKeyTransfer + w.keyID + protocol.PathTransferSuffix
	c1, _ := post(path, protocol.KeyTransferRequest{BindingKey: kr.BindingKey})
	c2, b2 := post(path, protocol.KeyTransferRequest{BindingKey: kr.BindingKey})
	r.ok = c1 == 200 && c2 == http.StatusUnauthorized
	r.observed = fmt.Sprintf("first transfer HTTP %d, second in the same session HTTP %d %s", c1, c2, clip(detail([]byte(b2)), 80))
	return r
}
