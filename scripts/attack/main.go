// Command attack replays the attacks of coffer's adversarial review (issue
// 12) against a real broker and agent started from the coffer binary under
// test, and prints one line per attack: what was sent, what came back, and
// whether that is the defended outcome. It exits 1 if any attack succeeds.
//
//	make attack                                   # builds bin/coffer, runs this
//	go run ./scripts/attack -coffer bin/coffer -fuzztime 0
//
// Everything runs on 127.0.0.1 in a temporary directory.
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coffer-dev/coffer/internal/hostile"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/kbs/token"
)

// floodSize is more than the broker's 100k-session table holds.
var floodSize = 120000

type result struct {
	id, name string
	ok       bool
	observed string
}

type env struct {
	coffer   string
	dir      string
	kbs      string // broker URL
	kbsProc  *os.Process
	agent    string // agent URL
	adminKey string
}

func main() {
	bin := flag.String("coffer", "bin/coffer", "coffer binary to attack")
	fuzzTime := flag.Duration("fuzztime", 20*time.Second, "how long to fuzz FuzzAttestRequest (finding 9); 0 skips it")
	flag.IntVar(&floodSize, "flood", floodSize, "/auth calls in the flood of finding 7")
	only := flag.String("only", "", "comma-separated finding numbers to replay (default: all)")
	flag.Parse()
	failed, err := run(*bin, *fuzzTime, *only)
	if err != nil {
		fmt.Fprintln(os.Stderr, "attack:", err)
		os.Exit(2)
	}
	if failed > 0 {
		os.Exit(1)
	}
}

// run replays the attacks and returns how many succeeded; the broker and
// agent it started are stopped before it returns.
func run(bin string, fuzzTime time.Duration, only string) (int, error) {
	abs, err := filepath.Abs(bin)
	if err != nil {
		return 0, err
	}
	dir, err := os.MkdirTemp("", "coffer-attack-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	e := &env{coffer: abs, dir: dir, adminKey: filepath.Join(dir, "admin.key")}
	if out, err := e.cmd(10*time.Second, "kbs", "keygen-admin", "--out", e.adminKey); err != nil {
		return 0, fmt.Errorf("keygen-admin: %v: %s", err, out)
	}
	stop, err := e.start()
	defer stop() // also when start failed half-way
	if err != nil {
		return 0, err
	}

	attacks := []func() result{
		e.nestedInitData, e.oversizedClaims, e.sparseBomb, e.declaredSize,
		e.dnsRebinding, e.keyOverwrite, e.authFlood, e.adminTokenLifetime,
	}
	if fuzzTime > 0 {
		attacks = append(attacks, func() result { return fuzzAttest(fuzzTime) })
	}
	// Later reviews register their attacks from their own files (see register).
	for _, a := range registered {
		attacks = append(attacks, func() result { return a(e) })
	}
	failed := 0
	for i, a := range attacks {
		if only != "" && !strings.Contains(","+only+",", ","+strconv.Itoa(i+1)+",") {
			continue
		}
		r := a()
		verdict := "defended"
		if !r.ok {
			verdict = "ATTACK SUCCEEDED"
			failed++
		}
		fmt.Printf("%-3s %-34s %-16s %s\n", r.id, r.name, verdict, r.observed)
	}
	return failed, nil
}

// registered holds the attacks of later reviews, in registration order; each
// review's file adds its own with register in an init function, so a new
// attack is a new function plus one line.
var registered []func(*env) result

// register adds attacks to the replay; their numbers for -only follow the
// built-in ones in registration order.
func register(attacks ...func(*env) result) { registered = append(registered, attacks...) }

// cmd runs coffer with a timeout and returns its combined output.
func (e *env) cmd(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := exec.CommandContext(ctx, e.coffer, args...)
	c.Dir = e.dir
	out, err := c.CombinedOutput()
	if ctx.Err() != nil {
		return string(out), fmt.Errorf("killed after %v", timeout)
	}
	return string(out), err
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitListening(addr string) error {
	for range 200 {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(25 * time.Millisecond)
	}
	return fmt.Errorf("nothing listening on %s", addr)
}

// start runs `coffer kbs serve` and `coffer agent`, with a resource the
// agent can fetch and a policy that releases it.
func (e *env) start() (func(), error) {
	var procs []*exec.Cmd
	stop := func() {
		for _, p := range procs {
			_ = p.Process.Signal(syscall.SIGTERM)
			_ = p.Wait()
		}
	}
	kbsAddr, agentAddr := freeAddr(), freeAddr()
	log, err := os.Create(filepath.Join(e.dir, "daemons.log"))
	if err != nil {
		return stop, err
	}
	for _, args := range [][]string{
		{"kbs", "serve", "--listen", kbsAddr, "--repository", filepath.Join(e.dir, "repo"), "--admin-public-key", e.adminKey + ".pub", "--allow-sample-tee"},
		{"agent", "--kbs", "http://" + kbsAddr, "--listen", agentAddr, "--tee", "sample", "--cdh-socket=", "--aa-socket="},
	} {
		c := exec.Command(e.coffer, args...)
		c.Stdout, c.Stderr = log, log
		if err := c.Start(); err != nil {
			return stop, err
		}
		procs = append(procs, c)
		addr := kbsAddr
		if args[0] == "agent" {
			addr = agentAddr
		}
		if err := waitListening(addr); err != nil {
			return stop, fmt.Errorf("%s: %v", args[0], err)
		}
	}
	e.kbs, e.kbsProc, e.agent = "http://"+kbsAddr, procs[0].Process, "http://"+agentAddr
	secret := filepath.Join(e.dir, "secret")
	if err := os.WriteFile(secret, []byte("the-secret"), 0o600); err != nil {
		return stop, err
	}
	for _, args := range [][]string{
		{"kbs", "set-resource-policy", "--allow-all"},
		{"kbs", "set-resource", "--path", "default/key/secret", "--resource-file", secret},
	} {
		if out, err := e.cmd(10*time.Second, append(args, "--url", e.kbs, "--admin-key", e.adminKey)...); err != nil {
			return stop, fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return stop, nil
}

// rcar is a bare RCAR client: every field is the attacker's to set.
type rcar struct {
	base string
	hc   *http.Client
	pub  protocol.TeePubKey
}

func newRCAR(base string) *rcar {
	jar, _ := cookiejar.New(nil)
	_, pub, _ := protocol.GenerateTeeKey()
	return &rcar{base: base, hc: &http.Client{Jar: jar, Timeout: 120 * time.Second}, pub: pub}
}

func (c *rcar) post(path string, v any) (int, []byte, error) {
	body, _ := json.Marshal(v)
	resp, err := c.hc.Post(c.base+path, "application/json", bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, b, nil
}

func (c *rcar) auth() (string, int, error) {
	code, b, err := c.post(protocol.PathAuth, protocol.Request{Version: protocol.Version, Tee: protocol.TeeSample, ExtraParams: json.RawMessage(`""`)})
	if err != nil || code != http.StatusOK {
		return "", code, err
	}
	var ch protocol.Challenge
	return ch.Nonce, code, json.Unmarshal(b, &ch)
}

// attestation is a valid sample attestation for nonce; svn and initData are the attacker's.
func (c *rcar) attestation(nonce, svn string, initData *protocol.InitData) protocol.Attestation {
	d, _ := protocol.ReportDataDigest(nonce, c.pub, "")
	ev, _ := json.Marshal(map[string]string{"svn": svn, "report_data": base64.StdEncoding.EncodeToString(d)})
	return protocol.Attestation{InitData: initData, RuntimeData: protocol.RuntimeData{Nonce: nonce, TeePubKey: c.pub},
		TeeEvidence: protocol.CompositeEvidence{PrimaryEvidence: ev}}
}

func detail(b []byte) string {
	var ei protocol.ErrorInfo
	if json.Unmarshal(b, &ei) == nil && ei.Detail != "" {
		return clip(ei.Detail, 90)
	}
	return clip(string(b), 90)
}

func clip(s string, n int) string {
	s = strings.TrimSpace(strings.ReplaceAll(s, "\n", " "))
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// peakRSS reads the process's high-water resident set (VmHWM) in MiB.
func peakRSS(p *os.Process) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid))
	if err != nil {
		return -1
	}
	m := regexp.MustCompile(`VmHWM:\s+(\d+) kB`).FindSubmatch(b)
	if m == nil {
		return -1
	}
	kb, _ := strconv.Atoi(string(m[1]))
	return kb / 1024
}

// Finding 1: init-data nested 16k deep (64 KiB) in an otherwise valid attestation.
func (e *env) nestedInitData() result {
	r := result{id: "1", name: "nested init-data TOML (64 KiB)"}
	c := newRCAR(e.kbs)
	nonce, code, err := c.auth()
	if err != nil || code != http.StatusOK {
		r.observed = fmt.Sprintf("auth failed: %d %v", code, err)
		return r
	}
	n := 16 << 10
	body := "algorithm = \"sha384\"\n[data]\nx = " + strings.Repeat("{a=", n) + "1" + strings.Repeat("}", n) + "\n"
	start := time.Now()
	code, b, err := c.post(protocol.PathAttest, c.attestation(nonce, "1", &protocol.InitData{Format: "toml", Body: body}))
	took := time.Since(start)
	rss := peakRSS(e.kbsProc)
	if err != nil {
		r.observed = fmt.Sprintf("no answer after %v: %v; broker peak RSS %d MiB", took.Round(time.Millisecond), err, rss)
		return r
	}
	r.ok = code >= 400 && code < 500 && took < 100*time.Millisecond && rss >= 0 && rss < 100
	r.observed = fmt.Sprintf("%d in %v, broker peak RSS %d MiB: %s", code, took.Round(time.Millisecond), rss, detail(b))
	return r
}

// Finding 2: a 900 KiB svn in sample evidence.
func (e *env) oversizedClaims() result {
	r := result{id: "2", name: "900 KiB evidence claim"}
	c := newRCAR(e.kbs)
	nonce, _, err := c.auth()
	if err != nil {
		r.observed = err.Error()
		return r
	}
	code, b, err := c.post(protocol.PathAttest, c.attestation(nonce, strings.Repeat("9", 900<<10), nil))
	if err != nil {
		r.observed = err.Error()
		return r
	}
	var tok protocol.AttestResponse
	_ = json.Unmarshal(b, &tok)
	r.ok = code != http.StatusOK && tok.Token == ""
	if tok.Token != "" {
		r.observed = fmt.Sprintf("%d: token of %d bytes issued", code, len(tok.Token))
	} else {
		r.observed = fmt.Sprintf("%d, no token: %s", code, detail(b))
	}
	return r
}

// layout writes a one-layer OCI image layout (uncompressed tar layer) whose
// manifest declares declaredSize for the layer blob (its real size if 0).
func layout(dir string, layerBlob []byte, diffID string, declaredSize int64) error {
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return err
	}
	put := func(b []byte) (string, int64, error) {
		sum := sha256.Sum256(b)
		h := fmt.Sprintf("%x", sum)
		return "sha256:" + h, int64(len(b)), os.WriteFile(filepath.Join(blobs, h), b, 0o644)
	}
	ld, lsize, err := put(layerBlob)
	if err != nil {
		return err
	}
	if declaredSize == 0 {
		declaredSize = lsize
	}
	if diffID == "" {
		diffID = ld
	}
	cfg, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux",
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{diffID}}, "config": map[string]any{}})
	cd, csize, err := put(cfg)
	if err != nil {
		return err
	}
	man, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": csize},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": declaredSize}}})
	md, msize, err := put(man)
	if err != nil {
		return err
	}
	idx, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []any{map[string]any{
		"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": msize,
		"annotations": map[string]string{"org.opencontainers.image.ref.name": "v1"}}}})
	if err := os.WriteFile(filepath.Join(dir, "index.json"), idx, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
}

// pullTimed runs coffer pull with a deadline and reports how it ended.
func (e *env) pullTimed(ref, rootfs string, limit time.Duration, watch func(), extra ...string) (string, bool) {
	start := time.Now()
	done := make(chan struct{})
	if watch != nil {
		go func() {
			for {
				select {
				case <-done:
					return
				case <-time.After(5 * time.Millisecond):
					watch()
				}
			}
		}()
	}
	args := append([]string{"pull", "--kbs", e.kbs, "--tee", "sample"}, extra...)
	out, err := e.cmd(limit, append(args, ref, rootfs)...)
	close(done)
	took := time.Since(start).Round(time.Millisecond)
	_, statErr := os.Stat(rootfs)
	switch {
	case err == nil:
		return fmt.Sprintf("pull succeeded in %v", took), false
	case strings.Contains(err.Error(), "killed after"):
		return fmt.Sprintf("pull still running after %v, killed", took), false
	}
	ok := errors.Is(statErr, os.ErrNotExist)
	return fmt.Sprintf("%v in %v: %s", err, took, clip(lastLine(out), 90)), ok
}

// lastLine is the last non-empty line of a command's output: its error
// (warnings, such as the unverified-integrity one, come before it).
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// Finding 3: a ~2 KiB layer declaring a 1 EiB sparse file.
func (e *env) sparseBomb() result {
	r := result{id: "3", name: "sparse-file bomb layer (1 EiB)"}
	dir := filepath.Join(e.dir, "sparse")
	blob := hostile.GNUSparseTar("bomb", 1<<60, 1<<60-4, "boom")
	if err := layout(dir, blob, "", 0); err != nil {
		r.observed = err.Error()
		return r
	}
	obs, ok := e.pullTimed("oci:"+dir+":v1", filepath.Join(e.dir, "rootfs-sparse"), 20*time.Second, nil)
	r.ok, r.observed = ok, fmt.Sprintf("%d-byte layer: %s", len(blob), obs)
	return r
}

// Finding 4: a small encrypted layer whose manifest declares 40 GiB.
func (e *env) declaredSize() result {
	r := result{id: "4", name: "layer declared as 40 GiB"}
	plain, enc := filepath.Join(e.dir, "declared-plain"), filepath.Join(e.dir, "declared")
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	_ = tw.WriteHeader(&tar.Header{Name: "f", Mode: 0o644, Size: 2, Typeflag: tar.TypeReg})
	_, _ = tw.Write([]byte("hi"))
	_ = tw.Close()
	priv, pub, err := rsaKeyFiles(e.dir)
	if err == nil {
		err = layout(plain, tb.Bytes(), "", 0)
	}
	if err == nil {
		var out string
		if out, err = e.cmd(60*time.Second, "encrypt", "--recipient", "jwe:"+pub, "oci:"+plain+":v1", "oci:"+enc+":v1"); err != nil {
			err = fmt.Errorf("encrypt: %v: %s", err, out)
		}
	}
	if err == nil {
		err = hostile.DeclareLayerSize(enc, 40<<30)
	}
	if err != nil {
		r.observed = err.Error()
		return r
	}
	free := func() int64 {
		var st syscall.Statfs_t
		_ = syscall.Statfs(e.dir, &st)
		return int64(st.Bavail) * st.Bsize
	}
	before, low := free(), free()
	obs, ok := e.pullTimed("oci:"+enc+":v1", filepath.Join(e.dir, "rootfs-declared"), 20*time.Second,
		func() { low = min(low, free()) }, "--key", priv)
	reserved := before - low
	r.ok = ok && reserved < 1<<30
	r.observed = fmt.Sprintf("%d-byte blob: most disk reserved during pull %d MiB; %s", tb.Len(), reserved>>20, obs)
	return r
}

// rsaKeyFiles writes a fresh RSA key pair (PKCS#8 and PKIX PEM).
func rsaKeyFiles(dir string) (priv, pub string, err error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", "", err
	}
	p8, _ := x509.MarshalPKCS8PrivateKey(k)
	pk, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	priv, pub = filepath.Join(dir, "rsa.pem"), filepath.Join(dir, "rsa.pub.pem")
	if err := os.WriteFile(priv, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), 0o600); err != nil {
		return "", "", err
	}
	return priv, pub, os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pk}), 0o644)
}

// Finding 5: a page on attacker.example rebinds its name to 127.0.0.1.
func (e *env) dnsRebinding() result {
	r := result{id: "5", name: "agent via DNS rebinding"}
	get := func(path, host, origin string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, e.agent+path, nil)
		if host != "" {
			req.Host = host
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		return resp.StatusCode, string(b)
	}
	var codes []string
	leaked := false
	for _, p := range []string{"/cdh/resource/default/key/secret", "/aa/token?token_type=kbs", "/aa/evidence?runtime_data=attacker"} {
		code, body := get(p, "attacker.example:8006", "http://attacker.example:8006")
		codes = append(codes, strconv.Itoa(code))
		if code == http.StatusOK || strings.Contains(body, "the-secret") {
			leaked = true
		}
	}
	ctl, body := get("/cdh/resource/default/key/secret", "", "")
	r.ok = !leaked && ctl == http.StatusOK && body == "the-secret"
	r.observed = fmt.Sprintf("Host/Origin attacker.example → %s (resource, token, evidence); loopback control → %d", strings.Join(codes, "/"), ctl)
	return r
}

// Finding 6: a second encrypt --kbs under the same key id.
func (e *env) keyOverwrite() result {
	r := result{id: "6", name: "encrypt --kbs over an existing key"}
	src := filepath.Join(e.dir, "plain")
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	_ = tw.WriteHeader(&tar.Header{Name: "secret", Mode: 0o644, Size: 6, Typeflag: tar.TypeReg})
	_, _ = tw.Write([]byte("hello\n"))
	_ = tw.Close()
	if err := layout(src, tb.Bytes(), "", 0); err != nil {
		r.observed = err.Error()
		return r
	}
	enc := func(dst string) (string, error) {
		return e.cmd(60*time.Second, "encrypt", "--kbs", e.kbs, "--admin-key", e.adminKey, "--key-id", "default/image_key/attack",
			"oci:"+src+":v1", "oci:"+filepath.Join(e.dir, dst))
	}
	if out, err := enc("enc1"); err != nil {
		r.observed = fmt.Sprintf("first encrypt failed: %v %s", err, clip(out, 80))
		return r
	}
	out, err := enc("enc2")
	if err == nil {
		r.observed = "second encrypt succeeded: the broker's key was replaced"
	} else {
		r.observed = fmt.Sprintf("second encrypt: %v: %s", err, clip(out, 80))
	}
	pullOut, perr := e.cmd(60*time.Second, "pull", "--kbs", e.kbs, "--tee", "sample", "oci:"+filepath.Join(e.dir, "enc1"), filepath.Join(e.dir, "rootfs-enc1"))
	if perr != nil {
		r.observed += fmt.Sprintf("; first image no longer opens: %s", clip(pullOut, 60))
	} else {
		r.observed += "; first image still opens"
	}
	r.ok = err != nil && perr == nil
	return r
}

// Finding 7: an attested session, then a flood of /auth from one address.
func (e *env) authFlood() result {
	r := result{id: "7", name: "/auth flood vs attested session"}
	victim := newRCAR(e.kbs)
	nonce, _, err := victim.auth()
	if err == nil {
		var code int
		code, _, err = victim.post(protocol.PathAttest, victim.attestation(nonce, "1", nil))
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("victim attest: %d", code)
		}
	}
	if err != nil {
		r.observed = err.Error()
		return r
	}
	flood := floodSize
	counts := map[int]int{}
	// The flood comes from an address of its own (127.0.0.2): the
	// attacker is not the victim, and the 1,024 challenges it leaves
	// outstanding for the session TTL (5 min) must not count against the
	// later attacks' clients on 127.0.0.1, which share this broker.
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 10 * time.Second}
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DialContext: dialer.DialContext}
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	body := []byte(`{"version":"0.4.0","tee":"sample","extra-params":""}`)
	start := time.Now()
	for range flood {
		resp, err := hc.Post(e.kbs+protocol.PathAuth, "application/json", bytes.NewReader(body))
		if err != nil {
			counts[0]++
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		counts[resp.StatusCode]++
	}
	took := time.Since(start).Round(time.Millisecond)
	resp, err := victim.hc.Get(e.kbs + protocol.PathResource + "default/key/secret")
	code := 0
	if err == nil {
		code = resp.StatusCode
		resp.Body.Close()
	}
	r.ok = code == http.StatusOK
	r.observed = fmt.Sprintf("%d /auth in %v → %d×200 %d×429; victim's cookie GET afterwards → %d", flood, took, counts[200], counts[429], code)
	return r
}

// Finding 8: an admin token that lives until 2500 and has no iat.
func (e *env) adminTokenLifetime() result {
	r := result{id: "8", name: "admin token exp=2500, no iat"}
	raw, err := os.ReadFile(e.adminKey)
	if err != nil {
		r.observed = err.Error()
		return r
	}
	key, err := parseEd25519(raw)
	if err != nil {
		r.observed = err.Error()
		return r
	}
	codes := []string{}
	accepted := false
	now := time.Now().Unix()
	for _, claims := range []string{`{"exp":16725225600}`, fmt.Sprintf(`{"iat":%d,"nbf":%d,"exp":%d}`, now, now, now+30*86400)} {
		tok := signAdmin(key, claims)
		req, _ := http.NewRequest(http.MethodPost, e.kbs+protocol.PathResource+"default/key/planted", strings.NewReader("x"))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			r.observed = err.Error()
			return r
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		codes = append(codes, fmt.Sprintf("%d (%s)", resp.StatusCode, clip(detail(b), 60)))
		if resp.StatusCode == http.StatusOK {
			accepted = true
		}
	}
	r.ok = !accepted
	r.observed = "year-2500 token → " + codes[0] + "; 30-day token → " + codes[1]
	return r
}

// Finding 9: the attest fuzz target must keep executing.
func fuzzAttest(d time.Duration) result {
	r := result{id: "9", name: "FuzzAttestRequest keeps going"}
	c := exec.Command("go", "test", "-run", "^$", "-fuzz", "^FuzzAttestRequest$", "-fuzztime", d.String(),
		"-fuzzminimizetime", "2s", "-parallel", "1", "./kbs/server/")
	out, err := c.CombinedOutput()
	lines := regexp.MustCompile(`execs: (\d+) \((\d+)/sec\)`).FindAllStringSubmatch(string(out), -1)
	stalled := 0
	for _, l := range lines {
		if l[2] == "0" {
			stalled++
		}
	}
	last := "no progress lines"
	if len(lines) > 0 {
		last = lines[len(lines)-1][1] + " execs"
	}
	r.ok = err == nil && len(lines) > 0 && stalled*3 <= len(lines)
	r.observed = fmt.Sprintf("%v of fuzzing: %s, %d of %d 3-second reports at 0 execs/s", d, last, stalled, len(lines))
	if err != nil {
		r.observed += ": " + clip(string(out), 120)
	}
	return r
}

func parseEd25519(pemBytes []byte) (ed25519.PrivateKey, error) {
	return token.ParseAdminPrivateKey(pemBytes)
}

// signAdmin signs arbitrary claims the way kbs-client signs admin tokens.
func signAdmin(key ed25519.PrivateKey, claims string) string {
	enc := base64.RawURLEncoding.EncodeToString
	signing := enc([]byte(`{"alg":"EdDSA","typ":"JWT"}`)) + "." + enc([]byte(claims))
	return signing + "." + enc(ed25519.Sign(key, []byte(signing)))
}
