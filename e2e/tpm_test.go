package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/agent/evidence"
	"github.com/coffer-dev/coffer/internal/testutil"
	"github.com/coffer-dev/coffer/kbs/attest"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/tpm/tpmtest"
)

// pcrExtend extends a SHA-256 PCR of sw with tpm2-tools, as a guest's boot
// chain or CoCo's attestation agent would; it returns the digest extended.
func pcrExtend(t *testing.T, sw tpmtest.Swtpm, pcr int, data string) []byte {
	t.Helper()
	bin := testutil.RequireTool(t, "tpm2_pcrextend")
	d := sha256.Sum256([]byte(data))
	cmd := exec.CommandContext(t.Context(), bin, fmt.Sprintf("%d:sha256=%x", pcr, d))
	cmd.Env = append(os.Environ(), "TPM2TOOLS_TCTI="+sw.TCTI)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tpm2_pcrextend: %v\n%s", err, out)
	}
	return d[:]
}

// extended is the value of a zero PCR extended once with digest.
func extended(digest []byte) string {
	v := sha256.Sum256(append(make([]byte, 32), digest...))
	return hex.EncodeToString(v[:])
}

// TPM attestation through the broker, with Debian's swtpm as the guest's
// TPM and tpm2-tools measuring into it: the AK coffer tpm ak-public prints
// is registered, PCR11 is pinned, get-resource --tee tpm gets the key; a
// second TPM (unregistered AK), a changed PCR, a quote replayed to a new
// nonce and init-data that PCR8 does not hold are all refused.
func TestTPMAttestationThroughBroker(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	boot := pcrExtend(t, sw, 11, "kernel and initrd of the guest")

	dir := t.TempDir()
	admin := filepath.Join(dir, "admin.key")
	mustCoffer(t, "kbs", "keygen-admin", "--out", admin)
	kbs := startBroker(t, admin+".pub")
	adm := []string{"--url", kbs, "--admin-key", admin}
	keyFile := filepath.Join(dir, "key")
	if err := os.WriteFile(keyFile, []byte("tpm-bound key"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustCoffer(t, append([]string{"kbs", "set-resource", "--path", "default/key/tpm", "--resource-file", keyFile}, adm...)...)
	get := func(addr string) (string, error) {
		out, stderr, err := coffer(t, "kbs", "get-resource", "--url", kbs, "--path", "default/key/tpm", "--tee", "tpm", "--tpm", addr)
		if err != nil {
			t.Logf("get-resource via %s: %v %s", addr, err, stderr)
		}
		return out, err
	}

	ak := strings.TrimSpace(mustCoffer(t, "tpm", "ak-public", "--tpm", sw.Addr))
	if again := strings.TrimSpace(mustCoffer(t, "tpm", "ak-public", "--tpm", sw.Addr)); again != ak {
		t.Fatalf("ak-public changed between calls: %s, then %s", ak, again)
	}

	// The default attestation policy (kbs/policy) and the affirming-only
	// resource policy: the AK must be registered (hardware) and the pinned
	// PCRs must match (executables).
	mustCoffer(t, append([]string{"kbs", "set-resource-policy", "--affirming"}, adm...)...)
	denied := func(what, addr, reason string) {
		t.Helper()
		out, err := get(addr)
		if !errors.Is(err, spec.ErrPolicyDenied) || !strings.Contains(err.Error(), reason) {
			t.Errorf("%s: got %q, %v; want a denial saying %q", what, out, err, reason)
		}
	}
	denied("unregistered AK", sw.Addr, "ak_public) is not registered")
	mustCoffer(t, append([]string{"kbs", "set-reference-value", "tpm_ak_public", ak}, adm...)...)
	mustCoffer(t, append([]string{"kbs", "set-reference-value", "tpm_pcr11", extended(boot)}, adm...)...)
	if out, err := get(sw.Addr); err != nil || out != "tpm-bound key" {
		t.Fatalf("registered AK, matching PCR11: %q, %v", out, err)
	}

	// Another TPM, measured the same way, whose AK nobody registered.
	sw2 := tpmtest.StartSwtpm(t)
	pcrExtend(t, sw2, 11, "kernel and initrd of the guest")
	denied("a second TPM", sw2.Addr, "ak_public) is not registered")

	// A quote replayed to another session's nonce, and init-data bound in
	// PCR8 (as CoCo's attestation agent binds it) or not.
	initdata := "algorithm = \"sha256\"\nversion = \"0.1.0\"\n\n[data]\n\"aa.toml\" = '''\n[token_configs]\n'''\n"
	pcrExtend(t, sw, 8, initdata)
	att, err := evidence.NewTPM(sw.Addr)
	if err != nil {
		t.Fatal(err)
	}
	id := &protocol.InitData{Format: "toml", Body: initdata}
	s1 := newRawSession(t, kbs)
	ev1 := s1.evidence(att)
	if code, body := s1.attest(ev1, id); code != http.StatusOK {
		t.Fatalf("attest with init-data in PCR8: %d %s", code, body)
	}
	s2 := newRawSession(t, kbs)
	if code, body := s2.attest(ev1, id); code != http.StatusUnauthorized || !strings.Contains(body, "qualifying data does not bind") {
		t.Errorf("quote replayed to a new nonce: %d %s", code, body)
	}
	s3 := newRawSession(t, kbs)
	other := &protocol.InitData{Format: "toml", Body: initdata + "# not what PCR8 holds\n"}
	if code, body := s3.attest(s3.evidence(att), other); code != http.StatusUnauthorized || !strings.Contains(body, "PCR8") {
		t.Errorf("init-data PCR8 does not hold: %d %s", code, body)
	}

	// A PCR that no longer matches its reference value.
	pcrExtend(t, sw, 11, "something else ran")
	denied("changed PCR11", sw.Addr, "pcr11 = ")
}

// rawSession speaks the RCAR protocol by hand, to send evidence the client
// never would.
type rawSession struct {
	t     *testing.T
	url   string
	hc    *http.Client
	nonce string
	pub   protocol.TeePubKey
}

func newRawSession(t *testing.T, url string) *rawSession {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	s := &rawSession{t: t, url: url, hc: &http.Client{Jar: jar}}
	_, pub, err := protocol.GenerateTeeKey()
	if err != nil {
		t.Fatal(err)
	}
	s.pub = pub
	code, body := s.post(protocol.PathAuth, protocol.Request{Version: protocol.Version, Tee: protocol.TeeTPM, ExtraParams: json.RawMessage(`""`)})
	var ch protocol.Challenge
	if code != http.StatusOK || json.Unmarshal([]byte(body), &ch) != nil {
		t.Fatalf("auth: %d %s", code, body)
	}
	s.nonce = ch.Nonce
	return s
}

func (s *rawSession) post(path string, v any) (int, string) {
	s.t.Helper()
	b, _ := json.Marshal(v)
	resp, err := s.hc.Post(s.url+path, protocol.ContentTypeJSON, bytes.NewReader(b))
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// evidence is att's evidence for this session's nonce and key.
func (s *rawSession) evidence(att evidence.Attester) json.RawMessage {
	s.t.Helper()
	d, err := protocol.ReportDataDigest(s.nonce, s.pub, "")
	if err != nil {
		s.t.Fatal(err)
	}
	ev, err := att.Evidence(s.t.Context(), d)
	if err != nil {
		s.t.Fatal(err)
	}
	return ev
}

func (s *rawSession) attest(ev json.RawMessage, id *protocol.InitData) (int, string) {
	s.t.Helper()
	return s.post(protocol.PathAttest, protocol.Attestation{
		InitData:    id,
		RuntimeData: protocol.RuntimeData{Nonce: s.nonce, TeePubKey: s.pub},
		TeeEvidence: protocol.CompositeEvidence{PrimaryEvidence: ev},
	})
}

// An AK provisioned the way trustee's kbs/test/setup-swtpm.sh provisions one
// for CoCo's attester (tpm2_createak under the EK at 0x81010001, persisted
// at 0x81010002) is the AK coffer prints and quotes with.
func TestTPMCoCoProvisionedAK(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	dir := t.TempDir()
	tool := func(name string, args ...string) {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), testutil.RequireTool(t, name), args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "TPM2TOOLS_TCTI="+sw.TCTI)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
	}
	tool("tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub")
	tool("tpm2_evictcontrol", "-c", "ek.ctx", "0x81010001")
	tool("tpm2_flushcontext", "-t")
	tool("tpm2_createak", "-C", "0x81010001", "-c", "ak.ctx", "-G", "rsa", "-g", "sha256", "-s", "rsassa", "-u", "ak.pem", "-f", "pem")
	tool("tpm2_evictcontrol", "-c", "ak.ctx", "0x81010002")
	pemBytes, err := os.ReadFile(filepath.Join(dir, "ak.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(pemBytes)
	if blk == nil {
		t.Fatalf("ak.pem: no PEM block")
	}
	want := base64.StdEncoding.EncodeToString(blk.Bytes)
	if got := strings.TrimSpace(mustCoffer(t, "tpm", "ak-public", "--tpm", sw.Addr)); got != want {
		t.Fatalf("coffer tpm ak-public = %s, want the provisioned AK %s", got, want)
	}
	att, err := evidence.NewTPM(sw.Addr)
	if err != nil {
		t.Fatal(err)
	}
	rd := sha256.Sum256([]byte("report data"))
	ev, err := att.Evidence(t.Context(), rd[:])
	if err != nil {
		t.Fatal(err)
	}
	c, err := attest.NewTPM(attest.Config{}).Verify(t.Context(), attest.Evidence{Tee: protocol.TeeTPM, Primary: ev, ReportData: rd[:]})
	if err != nil || c["ak_public"] != want {
		t.Fatalf("verify: %v, ak_public claim %v", err, c["ak_public"])
	}
}
