package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/kbs/attest"
	"github.com/coffer-dev/coffer/kbs/kbstest"
	"github.com/coffer-dev/coffer/kbs/policy"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/spec"
)

func runCoffer(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	root := NewRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

// sampleGet runs auth → attest → get-resource with the sample TEE.
func sampleGet(t *testing.T, url, path string) (int, []byte) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar}
	priv, pub, _ := protocol.GenerateTeeKey()
	post := func(p string, v any, out any) {
		body, _ := json.Marshal(v)
		resp, err := hc.Post(url+p, protocol.ContentTypeJSON, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d", p, resp.StatusCode)
		}
		_ = json.NewDecoder(resp.Body).Decode(out)
	}
	var ch protocol.Challenge
	post(protocol.PathAuth, protocol.Request{Version: protocol.Version, Tee: protocol.TeeSample, ExtraParams: json.RawMessage(`""`)}, &ch)
	d, _ := protocol.ReportDataDigest(ch.Nonce, pub, "")
	var ar protocol.AttestResponse
	post(protocol.PathAttest, protocol.Attestation{RuntimeData: protocol.RuntimeData{Nonce: ch.Nonce, TeePubKey: pub},
		TeeEvidence: protocol.CompositeEvidence{PrimaryEvidence: attest.SampleEvidence("1", d)}}, &ar)
	resp, err := hc.Get(url + protocol.PathResource + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil
	}
	var r protocol.Response
	_ = json.NewDecoder(resp.Body).Decode(&r)
	pt, err := protocol.Open(priv, &r)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, pt
}

func TestKBSAdminVerbs(t *testing.T) {
	b := kbstest.New(t)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key")
	_ = os.WriteFile(keyFile, []byte("image-kek"), 0o600)
	t.Setenv("COFFER_KBS_URL", b.URL)
	t.Setenv("COFFER_KBS_ADMIN_KEY", b.AdminKeyFile)

	// Seed workflow: set-resource → set-resource-policy → get-resource with sample attestation.
	if out, err := runCoffer(t, "", "kbs", "set-resource", "--path", "default/image_key/nginx", "--resource-file", keyFile); err != nil {
		t.Fatalf("set-resource: %v %s", err, out)
	}
	if code, _ := sampleGet(t, b.URL, "default/image_key/nginx"); code != http.StatusUnauthorized {
		t.Fatalf("before policy: got %d, want 401 (no reference values, affirming-only)", code)
	}
	if out, err := runCoffer(t, "", "kbs", "set-resource-policy", "--allow-all"); err != nil {
		t.Fatalf("set-resource-policy: %v %s", err, out)
	}
	if code, got := sampleGet(t, b.URL, "default/image_key/nginx"); code != http.StatusOK || string(got) != "image-kek" {
		t.Fatalf("get-resource: %d %q", code, got)
	}
	out, err := runCoffer(t, "", "kbs", "get-resource-policy")
	if err != nil || out != policy.ResourceAllowAll {
		t.Fatalf("get-resource-policy: %q %v", out, err)
	}
	// --affirming plus reference values.
	if _, err := runCoffer(t, "", "kbs", "set-resource-policy", "--affirming"); err != nil {
		t.Fatal(err)
	}
	for _, rv := range [][]string{{"launch_digest", "abcde"}, {"svn", "1", "2"}} {
		if out, err := runCoffer(t, "", append([]string{"kbs", "set-reference-value"}, rv...)...); err != nil {
			t.Fatalf("set-reference-value: %v %s", err, out)
		}
	}
	if code, _ := sampleGet(t, b.URL, "default/image_key/nginx"); code != http.StatusOK {
		t.Fatalf("affirming with reference values: %d", code)
	}
	// stdin resource, explicit flags beat env.
	if _, err := runCoffer(t, "from stdin", "kbs", "set-resource", "--url", b.URL, "--admin-key", b.AdminKeyFile, "--path", "default/k/stdin", "--resource-file", "-"); err != nil {
		t.Fatal(err)
	}
	if got, _ := b.Store.Get(context.Background(), protocol.ResourcePath{Repo: "default", Type: "k", Tag: "stdin"}); string(got) != "from stdin" {
		t.Fatalf("stdin resource: %q", got)
	}
	polFile := filepath.Join(dir, "bad.rego")
	_ = os.WriteFile(polFile, []byte("package policy\nallow if {"), 0o600)
	if _, err := runCoffer(t, "", "kbs", "set-resource-policy", "--policy-file", polFile); !errors.Is(err, spec.ErrUnsupported) || !strings.Contains(err.Error(), "rego_parse_error") {
		t.Fatalf("bad policy: got %v", err)
	}
	if _, err := runCoffer(t, "", "kbs", "set-attestation-policy", "--policy-file", polFile); err == nil {
		t.Fatal("bad attestation policy accepted")
	}
	if _, err := runCoffer(t, "", "kbs", "delete-resource", "--path", "default/image_key/nginx"); err != nil {
		t.Fatal(err)
	}
	if _, err := runCoffer(t, "", "kbs", "delete-resource", "--path", "default/image_key/nginx"); !errors.Is(err, spec.ErrNotFound) {
		t.Fatalf("delete missing: got %v", err)
	}
	if _, err := runCoffer(t, "", "kbs", "set-resource-policy"); !errors.Is(err, ErrUsage) {
		t.Fatalf("no policy flag: got %v", err)
	}
}

func TestKBSAdminVerbsNeedURLAndKey(t *testing.T) {
	t.Setenv("COFFER_KBS_URL", "")
	t.Setenv("COFFER_KBS_ADMIN_KEY", "")
	if _, err := runCoffer(t, "", "kbs", "get-resource-policy"); !errors.Is(err, ErrUsage) {
		t.Fatalf("got %v, want ErrUsage", err)
	}
}

func TestKBSKeygenAdmin(t *testing.T) {
	b := kbstest.New(t)
	out := filepath.Join(t.TempDir(), "admin.key")
	if _, err := runCoffer(t, "", "kbs", "keygen-admin", "--out", out); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(out)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("private key file: %v %v", st, err)
	}
	before, _ := os.ReadFile(out)
	if _, err := runCoffer(t, "", "kbs", "keygen-admin", "--out", out); !errors.Is(err, spec.ErrExists) {
		t.Fatalf("keygen-admin over an existing key without --force: %v", err)
	}
	if after, _ := os.ReadFile(out); string(after) != string(before) {
		t.Fatal("a refused keygen-admin changed the key")
	}
	// --force replaces both files, and the private key is 0600 even if the
	// file it replaces was readable by others (O_TRUNC kept the old mode).
	if err := os.Chmod(out, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := runCoffer(t, "", "kbs", "keygen-admin", "--out", out, "--force"); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(out); st.Mode().Perm() != 0o600 {
		t.Fatalf("private key after --force: %v", st.Mode().Perm())
	}
	if after, _ := os.ReadFile(out); string(after) == string(before) {
		t.Fatal("--force did not replace the key")
	}
	// A key the broker does not know is refused.
	if _, err := runCoffer(t, "", "kbs", "get-resource-policy", "--url", b.URL, "--admin-key", out); !errors.Is(err, spec.ErrPolicyDenied) {
		t.Fatalf("unknown admin key: got %v, want ErrPolicyDenied", err)
	}
}

func TestKBSServeBadConfig(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "kbs.toml")
	_ = os.WriteFile(cfg, []byte("bogus_key = 1\n"), 0o600)
	if _, err := runCoffer(t, "", "kbs", "serve", "--config", cfg); err == nil || !strings.Contains(err.Error(), "unknown keys") {
		t.Fatalf("got %v", err)
	}
	if _, err := runCoffer(t, "", "kbs", "serve", "--store", "tape", "--listen", "127.0.0.1:0"); err == nil || !strings.Contains(err.Error(), "tape") {
		t.Fatalf("bad store flag: got %v", err)
	}
}

func TestKBSServeSeedWorkflow(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	keyFile := filepath.Join(dir, "admin.key")
	if _, err := runCoffer(t, "", "kbs", "keygen-admin", "--out", keyFile); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "kbs.toml")
	_ = os.WriteFile(cfg, []byte("listen = \"127.0.0.1:1\"\nsession_ttl = \"1m\"\n"), 0o600)
	repo := filepath.Join(dir, "repo")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		root := NewRoot()
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		root.SetArgs([]string{"kbs", "serve", "--config", cfg, "--listen", addr, "--repository", repo, "--admin-public-key", keyFile + ".pub", "--allow-sample-tee"})
		done <- root.ExecuteContext(ctx)
	}()
	url := "http://" + addr
	for i := 0; ; i++ {
		if resp, err := http.Get(url + "/healthz"); err == nil {
			resp.Body.Close()
			break
		}
		if i > 200 {
			t.Fatal("broker did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	kek := filepath.Join(dir, "kek")
	_ = os.WriteFile(kek, []byte("0123456789abcdef0123456789abcdef"), 0o600)
	admin := []string{"--url", url, "--admin-key", keyFile}
	if _, err := runCoffer(t, "", append([]string{"kbs", "set-resource", "--path", "default/image_key/nginx", "--resource-file", kek}, admin...)...); err != nil {
		t.Fatal(err)
	}
	if _, err := runCoffer(t, "", append([]string{"kbs", "set-resource-policy", "--allow-all"}, admin...)...); err != nil {
		t.Fatal(err)
	}
	if code, got := sampleGet(t, url, "default/image_key/nginx"); code != http.StatusOK || string(got) != "0123456789abcdef0123456789abcdef" {
		t.Fatalf("get-resource: %d %q", code, got)
	}
	// The fs repository layout holds the key.
	if b, err := os.ReadFile(filepath.Join(repo, "default", "image_key", "nginx")); err != nil || len(b) != 32 {
		t.Fatalf("repository file: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not shut down")
	}
}

// A tenant holds a path-scoped token, not the admin key: --admin-token
// makes the admin verbs usable with it. A --reusable token makes several
// writes inside its scope; a default token buys one; nothing outside the
// scope passes, and key and token together are a usage error.
func TestKBSAdminToken(t *testing.T) {
	b := kbstest.New(t)
	t.Setenv("COFFER_KBS_URL", b.URL)
	t.Setenv("COFFER_KBS_ADMIN_KEY", "")
	t.Setenv("COFFER_KBS_ADMIN_TOKEN", "")
	dir := t.TempDir()
	mint := func(extra ...string) string {
		t.Helper()
		tok, err := runCoffer(t, "", append([]string{"kbs", "admin-token", "--admin-key", b.AdminKeyFile, "--allow-path", "tenant-a/*/*", "--ttl", "5m"}, extra...)...)
		if err != nil {
			t.Fatalf("admin-token %v: %v", extra, err)
		}
		f := filepath.Join(dir, fmt.Sprintf("tok%d", len(extra)))
		if err := os.WriteFile(f, []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	reusable, once := mint("--reusable"), mint()
	set := func(tokFile, path, value string) error {
		_, err := runCoffer(t, value, "kbs", "set-resource", "--admin-token", tokFile, "--path", path, "--resource-file", "-")
		return err
	}
	for _, p := range []string{"tenant-a/key/one", "tenant-a/key/two"} {
		if err := set(reusable, p, "v"); err != nil {
			t.Fatalf("reusable scoped token, %s: %v", p, err)
		}
	}
	if err := set(reusable, "tenant-b/key/one", "v"); !errors.Is(err, spec.ErrPolicyDenied) {
		t.Fatalf("reusable token outside its scope: %v, want ErrPolicyDenied", err)
	}
	if _, err := runCoffer(t, "", "kbs", "set-resource-policy", "--admin-token", reusable, "--allow-all"); !errors.Is(err, spec.ErrPolicyDenied) {
		t.Fatalf("scoped token changing the policy: %v, want ErrPolicyDenied", err)
	}
	if err := set(once, "tenant-a/key/three", "v"); err != nil {
		t.Fatalf("one-write token, first write: %v", err)
	}
	if err := set(once, "tenant-a/key/four", "v"); err == nil {
		t.Fatal("one-write token made a second write")
	}
	if got, _ := b.Store.Get(context.Background(), protocol.ResourcePath{Repo: "tenant-b", Type: "key", Tag: "one"}); got != nil {
		t.Fatalf("tenant-b resource written through tenant-a's token: %q", got)
	}
	if _, err := runCoffer(t, "", "kbs", "get-resource-policy", "--admin-token", reusable, "--admin-key", b.AdminKeyFile); !errors.Is(err, ErrUsage) {
		t.Fatalf("key and token together: %v, want ErrUsage", err)
	}
	junk := filepath.Join(dir, "junk")
	_ = os.WriteFile(junk, []byte("not a token"), 0o600)
	if _, err := runCoffer(t, "", "kbs", "get-resource-policy", "--admin-token", junk); !errors.Is(err, spec.ErrUnsupported) {
		t.Fatalf("junk token file: %v, want ErrUnsupported", err)
	}
}
