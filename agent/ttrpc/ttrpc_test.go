package ttrpc_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cttrpc "github.com/containerd/ttrpc"
	"github.com/go-jose/go-jose/v4"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/coffer-dev/coffer/agent/client"
	"github.com/coffer-dev/coffer/agent/evidence"
	"github.com/coffer-dev/coffer/agent/sealed"
	cofferttrpc "github.com/coffer-dev/coffer/agent/ttrpc"
	"github.com/coffer-dev/coffer/agent/ttrpc/gen/aa"
	"github.com/coffer-dev/coffer/agent/ttrpc/gen/cdh"
	"github.com/coffer-dev/coffer/imagecrypt"
	"github.com/coffer-dev/coffer/imagepolicy"
	"github.com/coffer-dev/coffer/internal/demo"
	"github.com/coffer-dev/coffer/kbs/kbstest"
	kwaa "github.com/coffer-dev/coffer/keywrap/aa"
	"github.com/coffer-dev/coffer/tpm"
	"github.com/coffer-dev/coffer/tpm/tpmtest"
	"github.com/coffer-dev/coffer/transport"
)

// agentUnderTest is a broker, the library server on two temp unix sockets
// and generated ttrpc clients dialled to them.
type agentUnderTest struct {
	b               *kbstest.Broker
	srv             *cofferttrpc.Server
	cdhSock, aaSock string
	res             cdh.GetResourceServiceService
	pullc           cdh.ImagePullServiceService
	seal            cdh.SealedSecretServiceService
	mount           cdh.SecureMountServiceService
	aac             aa.AttestationAgentServiceService
}

func shortTempDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "cf-ttrpc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func dial(t *testing.T, path string) *cttrpc.Client {
	t.Helper()
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c := cttrpc.NewClient(conn)
	t.Cleanup(func() { c.Close() })
	return c
}

func start(t *testing.T, b *kbstest.Broker, att evidence.Attester, opts ...cofferttrpc.Option) *agentUnderTest {
	t.Helper()
	if b == nil {
		b = kbstest.New(t)
		b.AffirmSample(t)
		b.AllowAll(t)
	}
	c, err := client.New(b.URL, client.WithAttester(evidence.Sample{}))
	if err != nil {
		t.Fatal(err)
	}
	if att == nil {
		att = evidence.Sample{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := cofferttrpc.New(ctx, c, att, opts...)
	if err != nil {
		t.Fatal(err)
	}
	dir := shortTempDir(t)
	u := &agentUnderTest{b: b, srv: srv, cdhSock: filepath.Join(dir, "cdh", "cdh.sock"), aaSock: filepath.Join(dir, "aa", "aa.sock")}
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- srv.ListenAndServe(ctx, u.cdhSock, u.aaSock, func(_, _ net.Addr) { close(ready) })
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		srv.Close()
	})
	cc, ac := dial(t, u.cdhSock), dial(t, u.aaSock)
	u.res, u.pullc = cdh.NewGetResourceServiceClient(cc), cdh.NewImagePullServiceClient(cc)
	u.seal, u.mount = cdh.NewSealedSecretServiceClient(cc), cdh.NewSecureMountServiceClient(cc)
	u.aac = aa.NewAttestationAgentServiceClient(ac)
	return u
}

func wantCode(t *testing.T, what string, err error, code codes.Code, msg string) {
	t.Helper()
	st, ok := status.FromError(err)
	if err == nil || !ok || st.Code() != code || !strings.Contains(st.Message(), msg) {
		t.Errorf("%s: error %v, want code %v containing %q", what, err, code, msg)
	}
}

func TestSocketsAre0600InCreatedDirs(t *testing.T) {
	u := start(t, nil, nil)
	for _, p := range []string{u.cdhSock, u.aaSock} {
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, %v; want a 0600 socket", p, fi.Mode(), err)
		}
	}
}

func TestGetResource(t *testing.T) {
	u := start(t, nil, nil)
	ctx := context.Background()
	u.b.SetResource(t, "default/secret/one", []byte("the broker's bytes\x00\xff"))
	got, err := u.res.GetResource(ctx, &cdh.GetResourceRequest{ResourcePath: "kbs:///default/secret/one"})
	if err != nil || !bytes.Equal(got.GetResource(), []byte("the broker's bytes\x00\xff")) {
		t.Fatalf("GetResource = %q, %v", got.GetResource(), err)
	}
	// A host part is ignored, as in guest-components.
	if got, err := u.res.GetResource(ctx, &cdh.GetResourceRequest{ResourcePath: "kbs://kbs.example:8080/default/secret/one"}); err != nil || len(got.GetResource()) != 20 {
		t.Errorf("with host: %q, %v", got.GetResource(), err)
	}
	for _, tc := range []struct{ uri, msg string }{
		{"kbs+pkcs11:///default/secret/one", `names KBS plugin "pkcs11"`},
		{"kbs:///default/secret", "want kbs:///<repo>/<type>/<tag>"},
		{"kbs:///default/../one", "invalid"},
		{"https://example/default/a/b", "want kbs:///"},
		{"", "want kbs:///"},
		{"kbs:///" + strings.Repeat("a", 5000) + "/b/c", "at most 4096"},
	} {
		_, err := u.res.GetResource(ctx, &cdh.GetResourceRequest{ResourcePath: tc.uri})
		wantCode(t, "GetResource "+tc.uri[:min(len(tc.uri), 40)], err, codes.InvalidArgument, tc.msg)
	}
	_, err = u.res.GetResource(ctx, &cdh.GetResourceRequest{ResourcePath: "kbs:///default/secret/missing"})
	wantCode(t, "missing", err, codes.NotFound, "[CDH] [ERROR]")
	// The broker's refusal surfaces with its reason.
	u.b.DenyAll(t)
	_, err = u.res.GetResource(ctx, &cdh.GetResourceRequest{ResourcePath: "kbs:///default/secret/one"})
	wantCode(t, "denied", err, codes.PermissionDenied, "denied")
	t.Logf("denied: %v", err)
}

func TestAttestationAgent(t *testing.T) {
	u := start(t, nil, nil)
	ctx := context.Background()
	ev, err := u.aac.GetEvidence(ctx, &aa.GetEvidenceRequest{RuntimeData: []byte("nonce-123")})
	if err != nil {
		t.Fatal(err)
	}
	var sample struct {
		SVN        string `json:"svn"`
		ReportData string `json:"report_data"`
	}
	if err := json.Unmarshal(ev.GetEvidence(), &sample); err != nil || sample.ReportData != base64.StdEncoding.EncodeToString([]byte("nonce-123")) {
		t.Errorf("evidence %s, %v", ev.GetEvidence(), err)
	}
	_, err = u.aac.GetEvidence(ctx, &aa.GetEvidenceRequest{RuntimeData: make([]byte, 5000)})
	wantCode(t, "big runtime data", err, codes.InvalidArgument, "at most 4096")
	if add, err := u.aac.GetAdditionalEvidence(ctx, &aa.GetAdditionalEvidenceRequest{RuntimeData: []byte("x")}); err != nil || len(add.GetEvidence()) != 0 {
		t.Errorf("additional evidence %q, %v", add.GetEvidence(), err)
	}
	tok, err := u.aac.GetToken(ctx, &aa.GetTokenRequest{TokenType: "kbs"})
	if err != nil {
		t.Fatal(err)
	}
	var tm map[string]string
	if err := json.Unmarshal(tok.GetToken(), &tm); err != nil || strings.Count(tm["token"], ".") != 2 || len(tm) != 1 {
		t.Errorf("kbs token %s, %v: want {\"token\": JWT} only", tok.GetToken(), err)
	}
	_, err = u.aac.GetToken(ctx, &aa.GetTokenRequest{TokenType: "coco_as"})
	wantCode(t, "coco_as unconfigured", err, codes.Unimplemented, "no attestation service configured")
	_, err = u.aac.GetToken(ctx, &aa.GetTokenRequest{TokenType: "nosuch"})
	wantCode(t, "bad token type", err, codes.InvalidArgument, `unsupported token type "nosuch"`)
	if tee, err := u.aac.GetTeeType(ctx, &aa.GetTeeTypeRequest{}); err != nil || tee.GetTee() != "sample" {
		t.Errorf("tee %q, %v", tee.GetTee(), err)
	}
	if at, err := u.aac.GetAdditionalTees(ctx, &aa.GetAdditionalTeesRequest{}); err != nil || len(at.GetAdditionalTees()) != 0 {
		t.Errorf("additional tees %v, %v", at.GetAdditionalTees(), err)
	}
	// Without an event log: NOT_ENABLED, as guest-components.
	r, err := u.aac.ExtendRuntimeMeasurement(ctx, &aa.ExtendRuntimeMeasurementRequest{Domain: "d", Operation: "o", Content: "c"})
	if err != nil || r.GetResult() != aa.RuntimeMeasurementResult_NOT_ENABLED {
		t.Errorf("extend without log: %v, %v", r.GetResult(), err)
	}
	_, err = u.aac.ExtendRuntimeMeasurement(ctx, &aa.ExtendRuntimeMeasurementRequest{Domain: "d", Operation: "o", Content: "two\nlines"})
	wantCode(t, "newline content", err, codes.InvalidArgument, "newline")
	// The sample TEE binds nothing and says so by succeeding (Unsupported upstream).
	if _, err := u.aac.BindInitData(ctx, &aa.BindInitDataRequest{Digest: make([]byte, 32)}); err != nil {
		t.Errorf("bind on sample: %v", err)
	}
	_, err = u.aac.BindInitData(ctx, &aa.BindInitDataRequest{})
	wantCode(t, "empty digest", err, codes.InvalidArgument, "Digest")
}

func TestCoCoASToken(t *testing.T) {
	// A CoCo attestation service's /attestation endpoint: coffer has none,
	// so the test checks the request guest-components sends and answers a token.
	as := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			VR []struct{ Tee, Evidence string } `json:"verification_requests"`
		}
		if r.URL.Path != "/attestation" || json.NewDecoder(r.Body).Decode(&req) != nil || len(req.VR) != 1 || req.VR[0].Tee != "sample" {
			http.Error(w, "bad request", 400)
			return
		}
		ev, err := base64.RawURLEncoding.DecodeString(req.VR[0].Evidence)
		if err != nil || !bytes.Contains(ev, []byte(`"svn":"1"`)) {
			http.Error(w, "bad evidence", 400)
			return
		}
		io.WriteString(w, "as.token.jwt")
	}))
	defer as.Close()
	u := start(t, nil, nil, cofferttrpc.WithTokenConfig(cofferttrpc.TokenConfig{CoCoASURL: as.URL}))
	tok, err := u.aac.GetToken(context.Background(), &aa.GetTokenRequest{TokenType: "coco_as"})
	if err != nil || string(tok.GetToken()) != "as.token.jwt" {
		t.Errorf("coco_as token %q, %v", tok.GetToken(), err)
	}
}

func TestRuntimeMeasurementOnTPM(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	att, err := evidence.NewTPM(sw.Addr)
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(shortTempDir(t), "aa", "eventlog")
	// PCR 17, guest-components' default, is a DRTM PCR a TPM extends only
	// from locality 4: from the OS it fails, clearly, and nothing is logged.
	def := start(t, nil, att, cofferttrpc.WithEventLog(filepath.Join(shortTempDir(t), "eventlog"), cofferttrpc.DefaultPCR, nil))
	ctx := context.Background()
	_, err = def.aac.ExtendRuntimeMeasurement(ctx, &aa.ExtendRuntimeMeasurementRequest{Domain: "d", Operation: "o", Content: "c"})
	wantCode(t, "PCR 17 on a TPM", err, codes.Internal, "extending PCR 17: warning code 0x7 : bad locality")

	// aa.toml's eventlog_config.init_pcr = 23 (application support) works.
	u := start(t, nil, att, cofferttrpc.WithEventLog(logPath, 23, nil))
	r, err := u.aac.ExtendRuntimeMeasurement(ctx, &aa.ExtendRuntimeMeasurementRequest{Domain: "github.com/confidential-containers", Operation: "PullImage", Content: `{"image":"a","digest":"sha256:00"}`})
	if err != nil || r.GetResult() != aa.RuntimeMeasurementResult_OK {
		t.Fatalf("extend: %v, %v", r.GetResult(), err)
	}
	idx := uint64(16)
	if _, err := u.aac.ExtendRuntimeMeasurement(ctx, &aa.ExtendRuntimeMeasurementRequest{Domain: "d", Operation: "o", Content: "c", RegisterIndex: &idx}); err != nil {
		t.Fatal(err)
	}
	idx = 99
	_, err = u.aac.ExtendRuntimeMeasurement(ctx, &aa.ExtendRuntimeMeasurementRequest{Domain: "d", Operation: "o", Content: "c", RegisterIndex: &idx})
	wantCode(t, "pcr 99", err, codes.InvalidArgument, "out of range")
	initDigest := sha256.Sum256([]byte("init-data"))
	if _, err := u.aac.BindInitData(ctx, &aa.BindInitDataRequest{Digest: initDigest[:]}); err != nil {
		t.Fatal(err)
	}
	if tee, _ := u.aac.GetTeeType(ctx, &aa.GetTeeTypeRequest{}); tee.GetTee() != "tpm" {
		t.Errorf("tee %q", tee.GetTee())
	}
	// The TPM as an additional attester beside the (sample) primary one.
	both := start(t, nil, nil, cofferttrpc.WithAdditionalAttesters(att))
	if at, err := both.aac.GetAdditionalTees(ctx, &aa.GetAdditionalTeesRequest{}); err != nil || strings.Join(at.GetAdditionalTees(), ",") != "tpm" {
		t.Errorf("additional tees %v, %v", at.GetAdditionalTees(), err)
	}
	add, err := both.aac.GetAdditionalEvidence(ctx, &aa.GetAdditionalEvidenceRequest{RuntimeData: []byte("nonce")})
	var addEv map[string]tpm.Evidence
	if err != nil || json.Unmarshal(add.GetEvidence(), &addEv) != nil || addEv["tpm"].AKPublic == "" || len(addEv) != 1 {
		t.Errorf("additional evidence %.200s, %v", add.GetEvidence(), err)
	}
	ev, err := u.aac.GetEvidence(ctx, &aa.GetEvidenceRequest{RuntimeData: []byte("nonce")})
	var quote tpm.Evidence
	if err != nil || json.Unmarshal(ev.GetEvidence(), &quote) != nil || quote.AKPublic == "" || len(quote.Quote.PCRs) != tpm.NumPCRs {
		t.Errorf("TPM evidence %.200s, %v", ev.GetEvidence(), err)
	}
	// Replay: the log's events reproduce PCR 23 and 16; PCR 8 holds init-data.
	e1, d1 := cofferttrpc.AAELEntry(23, `github.com/confidential-containers PullImage {"image":"a","digest":"sha256:00"}`)
	e2, d2 := cofferttrpc.AAELEntry(16, "d o c")
	got, err := os.ReadFile(logPath)
	if err != nil || !bytes.Equal(got, append(e1, e2...)) {
		t.Errorf("event log %x, %v; want the two AAEL entries", got, err)
	}
	tp, err := tpm.Open(ctx, sw.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	pcrs, err := tp.ReadPCRs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ext := func(d []byte) []byte { s := sha256.Sum256(append(make([]byte, 32), d...)); return s[:] }
	for _, c := range []struct {
		i    int
		want []byte
	}{{23, ext(d1)}, {16, ext(d2)}, {8, ext(initDigest[:])}} {
		if !bytes.Equal(pcrs[c.i], c.want) {
			t.Errorf("PCR %d = %x, want %x", c.i, pcrs[c.i], c.want)
		}
	}
}

func TestSecureMountRefused(t *testing.T) {
	u := start(t, nil, nil)
	ctx := context.Background()
	_, err := u.mount.SecureMount(ctx, &cdh.SecureMountRequest{VolumeType: "block-device", MountPoint: "/mnt"})
	wantCode(t, "block-device", err, codes.Unimplemented, "LUKS2 block device")
	_, err = u.mount.SecureMount(ctx, &cdh.SecureMountRequest{VolumeType: "nfs"})
	wantCode(t, "nfs", err, codes.InvalidArgument, `unknown volume type "nfs"`)
}

func jwkJSON(t *testing.T, k any) []byte {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKey{Key: k})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestUnsealSecret(t *testing.T) {
	u := start(t, nil, nil)
	ctx := context.Background()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u.b.SetResource(t, "default/sealed-secret/key1", jwkJSON(t, &key.PublicKey))
	u.b.SetResource(t, "default/app/password", []byte("hunter2"))
	sec := sealed.Secret{Type: "vault", Provider: "kbs", Name: "kbs:///default/app/password"}
	ss, err := sealed.Seal(sec, key, "kbs:///default/sealed-secret/key1")
	if err != nil {
		t.Fatal(err)
	}
	out, err := u.seal.UnsealSecret(ctx, &cdh.UnsealSecretInput{Secret: []byte(ss)})
	if err != nil || string(out.GetPlaintext()) != "hunter2" {
		t.Fatalf("unseal = %q, %v", out.GetPlaintext(), err)
	}
	// Every single-character change is refused (header, payload, signature).
	for _, off := range []int{10, len(ss) / 2, len(ss) - 5} {
		b := []byte(ss)
		if b[off] == 'A' {
			b[off] = 'B'
		} else {
			b[off] = 'A'
		}
		if out, err := u.seal.UnsealSecret(ctx, &cdh.UnsealSecretInput{Secret: b}); err == nil {
			t.Errorf("tampered at %d: unsealed %q", off, out.GetPlaintext())
		}
	}
	wrong, _ := sealed.Seal(sec, other, "kbs:///default/sealed-secret/key1")
	_, err = u.seal.UnsealSecret(ctx, &cdh.UnsealSecretInput{Secret: []byte(wrong)})
	wantCode(t, "wrong key", err, codes.Internal, "signature does not verify")
	// An unsigned secret (guest-components' "fake" header with verification skipped) is refused.
	p, _ := json.Marshal(sec)
	unsigned := "sealed.fakejwsheader." + base64.RawURLEncoding.EncodeToString(p) + ".fakesignature"
	_, err = u.seal.UnsealSecret(ctx, &cdh.UnsealSecretInput{Secret: []byte(unsigned)})
	wantCode(t, "unsigned", err, codes.InvalidArgument, "malformed sealed secret")
	env, _ := sealed.Seal(sealed.Secret{Type: "envelope", Provider: "aliyun", KeyID: "k"}, key, "kbs:///default/sealed-secret/key1")
	_, err = u.seal.UnsealSecret(ctx, &cdh.UnsealSecretInput{Secret: []byte(env)})
	wantCode(t, "envelope", err, codes.Unimplemented, "coffer has providers kbs")
	_, err = u.seal.UnsealSecret(ctx, &cdh.UnsealSecretInput{Secret: bytes.Repeat([]byte("a"), sealed.MaxSealedSecret+1)})
	wantCode(t, "oversized", err, codes.InvalidArgument, "at most")
}

// encryptedRegistryImage pushes the demo image, its layers encrypted to a
// KEK the broker holds, to an in-process registry (behind basic auth when
// user is set) and returns host/app:enc.
func encryptedRegistryImage(t *testing.T, b *kbstest.Broker, user, pass string) string {
	t.Helper()
	ctx := context.Background()
	kek := make([]byte, 32)
	rand.Read(kek)
	b.SetResource(t, "default/image_key/app", kek)
	w, err := kwaa.NewWrapper(kek, "kbs:///default/image_key/app")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := demo.WriteImage(filepath.Join(dir, "app"), "v1"); err != nil {
		t.Fatal(err)
	}
	var h http.Handler = registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	if user != "" {
		inner := h
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			inner.ServeHTTP(w, r)
		})
	}
	rs := httptest.NewServer(h)
	t.Cleanup(rs.Close)
	host := strings.TrimPrefix(rs.URL, "http://")
	src, _ := transport.Parse("oci:" + filepath.Join(dir, "app") + ":v1")
	dst, _ := transport.Parse("docker://" + host + "/app:enc")
	var topts []transport.Option
	if user != "" {
		topts = append(topts, transport.WithCreds(user+":"+pass))
	}
	if _, err := imagecrypt.Copy(ctx, src, dst, imagecrypt.EncryptFor(w), topts); err != nil {
		t.Fatal(err)
	}
	return host + "/app:enc"
}

func TestPullImage(t *testing.T) {
	u := start(t, nil, nil)
	ctx := context.Background()
	img := encryptedRegistryImage(t, u.b, "", "")
	bundle := t.TempDir()
	if err := os.Mkdir(filepath.Join(bundle, "rootfs"), 0o755); err != nil { // kata-agent may pre-create it
		t.Fatal(err)
	}
	resp, err := u.pullc.PullImage(ctx, &cdh.ImagePullRequest{ImageUrl: img, BundlePath: bundle})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(resp.GetManifestDigest(), "sha256:") || len(resp.GetManifestDigest()) != 71 {
		t.Errorf("manifest digest %q", resp.GetManifestDigest())
	}
	got, err := os.ReadFile(filepath.Join(bundle, "rootfs", "secret"))
	if err != nil || string(got) != demo.Secret+"\n" {
		t.Errorf("rootfs/secret = %q, %v", got, err)
	}
	// A second pull into the same bundle is refused, the rootfs kept.
	_, err = u.pullc.PullImage(ctx, &cdh.ImagePullRequest{ImageUrl: img, BundlePath: bundle})
	wantCode(t, "non-empty rootfs", err, codes.InvalidArgument, "not an empty directory")
	for _, tc := range []struct{ url, bundle, msg string }{
		{img, "relative/bundle", "clean absolute path"},
		{img, filepath.Join(bundle, "nosuch"), "is not a directory"},
		{"", bundle, "image_url must be"},
		{"oci:/tmp/x", t.TempDir(), "only registry references"},
		{"UPPER/Case::bad", t.TempDir(), "image_url"},
	} {
		_, err := u.pullc.PullImage(ctx, &cdh.ImagePullRequest{ImageUrl: tc.url, BundlePath: tc.bundle})
		wantCode(t, "pull "+tc.url+" "+tc.bundle, err, codes.InvalidArgument, tc.msg)
	}
	// Without the key the pull fails and leaves no rootfs.
	u.b.DenyAll(t)
	fresh := t.TempDir()
	_, err = u.pullc.PullImage(ctx, &cdh.ImagePullRequest{ImageUrl: img, BundlePath: fresh})
	if err == nil {
		t.Fatal("pull with the key denied succeeded")
	}
	if _, err := os.Lstat(filepath.Join(fresh, "rootfs")); !os.IsNotExist(err) {
		t.Errorf("failed pull left a rootfs: %v", err)
	}
}

func TestPullImagePolicyAndCredentials(t *testing.T) {
	b := kbstest.New(t)
	b.AffirmSample(t)
	b.AllowAll(t)
	img := encryptedRegistryImage(t, b, "puller", "s3cret")
	auth := base64.StdEncoding.EncodeToString([]byte("puller:s3cret"))
	host, _, _ := strings.Cut(img, "/")
	b.SetResource(t, "default/credential/reg", []byte(`{"auths":{"`+host+`":{"auth":"`+auth+`"}}}`))
	b.SetResource(t, "default/security-policy/reject", []byte(`{"default":[{"type":"reject"}]}`))
	b.SetResource(t, "default/registry-configuration/blocked", []byte("[[registry]]\nprefix = \""+host+"/app\"\nblocked = true\n"))
	ctx := context.Background()

	// Anonymous: the registry refuses.
	anon := start(t, b, nil)
	_, err := anon.pullc.PullImage(ctx, &cdh.ImagePullRequest{ImageUrl: img, BundlePath: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "UNAUTHORIZED") && !strings.Contains(err.Error(), "401") && !strings.Contains(strings.ToLower(err.Error()), "unauthorized") {
		t.Errorf("anonymous pull: %v, want the registry's refusal", err)
	}
	// Credentials from the broker: the pull works.
	withCreds := start(t, b, nil, cofferttrpc.WithRegistryCredentials("kbs:///default/credential/reg"))
	bundle := t.TempDir()
	if _, err := withCreds.pullc.PullImage(ctx, &cdh.ImagePullRequest{ImageUrl: img, BundlePath: bundle}); err != nil {
		t.Fatalf("pull with broker credentials: %v", err)
	}
	if _, err := os.Stat(filepath.Join(bundle, "rootfs", "secret")); err != nil {
		t.Error(err)
	}
	// The image security policy from the broker refuses before anything is unpacked.
	rejecting := start(t, b, nil, cofferttrpc.WithRegistryCredentials("kbs:///default/credential/reg"), cofferttrpc.WithImagePolicy("kbs:///default/security-policy/reject"))
	bundle = t.TempDir()
	_, err = rejecting.pullc.PullImage(ctx, &cdh.ImagePullRequest{ImageUrl: img, BundlePath: bundle})
	wantCode(t, "policy reject", err, codes.PermissionDenied, "")
	if _, err := os.Lstat(filepath.Join(bundle, "rootfs")); !os.IsNotExist(err) {
		t.Errorf("refused pull left a rootfs: %v", err)
	}
	// A registry configuration blocking the prefix refuses it.
	blocked := start(t, b, nil, cofferttrpc.WithRegistryCredentials("kbs:///default/credential/reg"), cofferttrpc.WithRegistryConfig("kbs:///default/registry-configuration/blocked"))
	_, err = blocked.pullc.PullImage(ctx, &cdh.ImagePullRequest{ImageUrl: img, BundlePath: t.TempDir()})
	wantCode(t, "blocked registry", err, codes.PermissionDenied, "blocked by the registry configuration")
}

func TestServeStopsWithContext(t *testing.T) {
	b := kbstest.New(t)
	c, _ := client.New(b.URL, client.WithAttester(evidence.Sample{}))
	srv, err := cofferttrpc.New(context.Background(), c, evidence.Sample{})
	if err != nil {
		t.Fatal(err)
	}
	dir := shortTempDir(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ListenAndServe(ctx, filepath.Join(dir, "c.sock"), "", nil) }()
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("serve did not stop")
	}
	if _, err := os.Lstat(filepath.Join(dir, "c.sock")); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
}

func TestPullImageIsMeasured(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	att, err := evidence.NewTPM(sw.Addr)
	if err != nil {
		t.Fatal(err)
	}
	b := kbstest.New(t)
	b.AffirmSample(t)
	b.AllowAll(t)
	img := encryptedRegistryImage(t, b, "", "")
	logPath := filepath.Join(shortTempDir(t), "eventlog")
	u := start(t, b, att, cofferttrpc.WithEventLog(logPath, 23, nil))
	resp, err := u.pullc.PullImage(context.Background(), &cdh.ImagePullRequest{ImageUrl: img, BundlePath: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := cofferttrpc.AAELEntry(23, `github.com/confidential-containers PullImage {"image":"`+img+`", "digest":"`+resp.GetManifestDigest()+`"}`)
	if got, err := os.ReadFile(logPath); err != nil || !bytes.Equal(got, want) {
		t.Errorf("event log after pull %q, %v; want %q", got, err, want)
	}
}

// Two processes' worth (kata-agent's shim layout): the CDH keeps no event
// log and records its pulls through the AA's socket, as guest-components'
// CDH does.
func TestPullImageRecordedThroughAASocket(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	att, err := evidence.NewTPM(sw.Addr)
	if err != nil {
		t.Fatal(err)
	}
	b := kbstest.New(t)
	b.AffirmSample(t)
	b.AllowAll(t)
	img := encryptedRegistryImage(t, b, "", "")
	logPath := filepath.Join(shortTempDir(t), "eventlog")
	aaSide := start(t, b, att, cofferttrpc.WithEventLog(logPath, 23, nil))
	cdhSide := start(t, b, nil, cofferttrpc.WithAASocket("unix://"+aaSide.aaSock))
	resp, err := cdhSide.pullc.PullImage(context.Background(), &cdh.ImagePullRequest{ImageUrl: img, BundlePath: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := cofferttrpc.AAELEntry(23, `github.com/confidential-containers PullImage {"image":"`+img+`", "digest":"`+resp.GetManifestDigest()+`"}`)
	if got, err := os.ReadFile(logPath); err != nil || !bytes.Equal(got, want) {
		t.Errorf("AA's event log after the CDH's pull %q, %v; want %q", got, err, want)
	}
}

// CDH's keyprovider.KeyProviderService on the CDH socket, as ocicrypt-rs's
// "ttrpc" keyprovider calls it: UnWrapKey of an attestation-agent
// annotation returns the private options through the broker's KEK.
func TestKeyProviderOverTTRPC(t *testing.T) {
	u := start(t, nil, nil)
	kek := make([]byte, 32)
	rand.Read(kek)
	u.b.SetResource(t, "default/image_key/kp", kek)
	w, err := kwaa.NewWrapper(kek, "kbs:///default/image_key/kp")
	if err != nil {
		t.Fatal(err)
	}
	privopts := []byte(`{"symkey":"c2VjcmV0","cipheroptions":{}}`)
	ann, err := w.Wrap(context.Background(), privopts)
	if err != nil {
		t.Fatal(err)
	}
	in, _ := json.Marshal(map[string]any{"op": "keyunwrap", "keyunwrapparams": map[string]any{"dc": map[string]any{"Parameters": map[string]any{}}, "annotation": ann}})
	var out wrapperspb.BytesValue
	if err := dial(t, u.cdhSock).Call(context.Background(), "keyprovider.KeyProviderService", "UnWrapKey", wrapperspb.Bytes(in), &out); err != nil {
		t.Fatal(err)
	}
	var res struct {
		KeyUnwrapResults struct {
			OptsData []byte `json:"optsdata"`
		} `json:"keyunwrapresults"`
	}
	if err := json.Unmarshal(out.GetValue(), &res); err != nil || !bytes.Equal(res.KeyUnwrapResults.OptsData, privopts) {
		t.Errorf("UnWrapKey = %s, %v", out.GetValue(), err)
	}
	u.b.DenyAll(t)
	err = dial(t, u.cdhSock).Call(context.Background(), "keyprovider.KeyProviderService", "UnWrapKey", wrapperspb.Bytes(in), &out)
	if st, _ := status.FromError(err); err == nil || st.Code() != codes.PermissionDenied {
		t.Errorf("UnWrapKey with the broker denying: %v", err)
	}
}

func TestRegistryConfigResolve(t *testing.T) {
	rc, err := cofferttrpc.ParseRegistryConfig([]byte(`
[[registry]]
prefix = "docker.io/library/nginx"
blocked = true
[[registry]]
prefix = "example.com/foo"
location = "internal.example/bar"
[[registry]]
prefix = "example.com"
blocked = true
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ in, want, errMsg string }{
		{"docker://nginx:latest", "", "blocked"},
		{"docker://index.docker.io/library/nginx:1", "", "blocked"},
		{"docker://docker.io/library/nginxfoo:1", "docker://docker.io/library/nginxfoo:1", ""},
		{"docker://example.com/foo/app:v1", "docker://internal.example/bar/app:v1", ""},
		{"docker://example.com/foo/app@sha256:" + strings.Repeat("a", 64), "docker://internal.example/bar/app@sha256:" + strings.Repeat("a", 64), ""},
		{"docker://example.com/other:v1", "", "blocked"},
		{"docker://quay.io/x:v1", "docker://quay.io/x:v1", ""},
	} {
		ref, err := transport.Parse(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		got, err := rc.Resolve(ref)
		switch {
		case tc.errMsg != "":
			if err == nil || !strings.Contains(err.Error(), tc.errMsg) {
				t.Errorf("%s: %v, %v; want an error containing %q", tc.in, got, err, tc.errMsg)
			}
		case err != nil || got.String() != tc.want:
			t.Errorf("%s → %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := l.Addr().String()
	l.Close()
	return a
}

// Registry mirrors from the broker's registry configuration are tried in
// order before the primary location, as containers/image does: the
// primary and the first mirror are down, the second mirror serves the
// image. mirror-by-digest-only keeps tag pulls off the mirrors; a digest
// pull still uses them. The image policy judges the name asked for.
func TestPullImageFromMirror(t *testing.T) {
	b := kbstest.New(t)
	b.AffirmSample(t)
	b.AllowAll(t)
	img := encryptedRegistryImage(t, b, "", "")
	host, _, _ := strings.Cut(img, "/")
	primary, deadMirror := closedAddr(t), closedAddr(t)
	conf := func(extra string) []byte {
		return []byte("[[registry]]\nprefix = \"" + primary + "/team\"\n" + extra +
			"[[registry.mirror]]\nlocation = \"" + deadMirror + "/x\"\n[[registry.mirror]]\nlocation = \"" + host + "\"\n")
	}
	b.SetResource(t, "default/registry-configuration/mirrors", conf(""))
	b.SetResource(t, "default/registry-configuration/digest-only", conf("mirror-by-digest-only = true\n"))
	// A policy that accepts only the name asked for, not the mirror's.
	b.SetResource(t, "default/security-policy/team", []byte(`{"default":[{"type":"reject"}],"transports":{"docker":{"`+primary+`/team":[{"type":"insecureAcceptAnything"}]}}}`))
	ctx := context.Background()

	u := start(t, b, nil, cofferttrpc.WithRegistryConfig("kbs:///default/registry-configuration/mirrors"), cofferttrpc.WithImagePolicy("kbs:///default/security-policy/team"))
	bundle := t.TempDir()
	res, err := u.pullc.PullImage(ctx, &cdh.ImagePullRequest{ImageUrl: primary + "/team/app:enc", BundlePath: bundle})
	if err != nil {
		t.Fatalf("pull through the mirror: %v", err)
	}
	if _, err := os.Stat(filepath.Join(bundle, "rootfs", "secret")); err != nil {
		t.Error(err)
	}

	d := start(t, b, nil, cofferttrpc.WithRegistryConfig("kbs:///default/registry-configuration/digest-only"), cofferttrpc.WithImagePolicy("kbs:///default/security-policy/team"))
	_, err = d.pullc.PullImage(ctx, &cdh.ImagePullRequest{ImageUrl: primary + "/team/app:enc", BundlePath: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), primary) {
		t.Errorf("tag pull with mirror-by-digest-only: %v, want the primary's failure", err)
	}
	byDigest := primary + "/team/app@" + res.GetManifestDigest()
	if _, err := d.pullc.PullImage(ctx, &cdh.ImagePullRequest{ImageUrl: byDigest, BundlePath: t.TempDir()}); err != nil {
		t.Errorf("digest pull with mirror-by-digest-only: %v", err)
	}
	// Asked for by the mirror's own name, the policy rejects it.
	_, err = u.pullc.PullImage(ctx, &cdh.ImagePullRequest{ImageUrl: img, BundlePath: t.TempDir()})
	wantCode(t, "mirror's own name", err, codes.PermissionDenied, "")

	// The owner pinned the name to another manifest (the mirror serves a
	// substitute): the broker's pin for the name asked for refuses it, and
	// no later source is tried after that verdict.
	id := "docker://" + primary + "/team/app:enc"
	pin, _ := imagepolicy.Pin{Version: 1, Reference: id, MediaType: "application/vnd.oci.image.manifest.v1+json",
		Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("0", 64)}}.Marshal()
	b.SetResource(t, imagepolicy.PinPath("default", id).String(), pin)
	bundle = t.TempDir()
	_, err = u.pullc.PullImage(ctx, &cdh.ImagePullRequest{ImageUrl: primary + "/team/app:enc", BundlePath: bundle})
	if err == nil || !strings.Contains(err.Error(), "changed since it was pinned") || strings.Contains(err.Error(), "dial tcp "+primary) {
		t.Errorf("substitute under a pinned name: %v, want the pin's refusal, the primary never tried", err)
	}
	if _, err := os.Lstat(filepath.Join(bundle, "rootfs")); !os.IsNotExist(err) {
		t.Errorf("refused pull left a rootfs: %v", err)
	}
}

func TestRegistryConfigSources(t *testing.T) {
	rc, err := cofferttrpc.ParseRegistryConfig([]byte(`
[[registry]]
prefix = "example.com/foo"
location = "internal.example/bar"
[[registry.mirror]]
location = "m1.example/foo"
[[registry.mirror]]
location = "m2.example"
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "m3.example"
pull-from-mirror = "tag-only"
`))
	if err != nil {
		t.Fatal(err)
	}
	dg := "@sha256:" + strings.Repeat("a", 64)
	for in, want := range map[string]string{
		"docker://example.com/foo/app:v1":   "docker://m1.example/foo/app:v1 docker://m3.example/app:v1 docker://internal.example/bar/app:v1",
		"docker://example.com/foo/app" + dg: "docker://m1.example/foo/app" + dg + " docker://m2.example/app" + dg + " docker://internal.example/bar/app" + dg,
		"docker://quay.io/x:v1":             "docker://quay.io/x:v1",
	} {
		ref, _ := transport.Parse(in)
		src, err := rc.Sources(ref)
		var got []string
		for _, s := range src {
			got = append(got, s.String())
		}
		if err != nil || strings.Join(got, " ") != want {
			t.Errorf("%s → %v, %v; want %s", in, got, err, want)
		}
	}
	if _, err := cofferttrpc.ParseRegistryConfig([]byte("[[registry]]\nprefix = \"a\"\n[[registry.mirror]]\nlocation = \"b\"\npull-from-mirror = \"sometimes\"\n")); err == nil {
		t.Error("pull-from-mirror = sometimes accepted")
	}
}
