package e2e

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/internal/cli"
	"github.com/coffer-dev/coffer/internal/testutil"
	"github.com/coffer-dev/coffer/kbs/kbstest"
	"github.com/coffer-dev/coffer/keywrap/keyprovider"
	"github.com/coffer-dev/coffer/spec"
)

// aaAnnotation builds, independently of coffer's aa package, the annotation
// entry CoCo's attestation-agent keyprovider writes.
func aaAnnotation(t *testing.T, kek, privopts []byte, kid string) []byte {
	t.Helper()
	blk, _ := aes.NewCipher(kek)
	gcm, _ := cipher.NewGCM(blk)
	iv := make([]byte, 12)
	rand.Read(iv)
	b, _ := json.Marshal(map[string]string{
		"kid":          kid,
		"wrapped_data": base64.StdEncoding.EncodeToString(gcm.Seal(nil, iv, privopts, nil)),
		"iv":           base64.StdEncoding.EncodeToString(iv),
		"wrap_type":    "A256GCM",
	})
	return b
}

func brokerWithKEK(t *testing.T) (*kbstest.Broker, []byte) {
	b := kbstest.New(t)
	kek := make([]byte, 32)
	rand.Read(kek)
	b.SetResource(t, "default/image_key/app", kek)
	b.AllowAll(t)
	return b, kek
}

func TestKeyproviderCmdUnwrapsThroughBroker(t *testing.T) {
	b, kek := brokerWithKEK(t)
	privopts := []byte(`{"symkey":"c2VjcmV0","digest":"sha256:00","cipheroptions":{}}`)
	ann := aaAnnotation(t, kek, privopts, "kbs:///default/image_key/app")
	req := `{"op":"keyunwrap","keywrapparams":{"ec":null,"optsdata":null},"keyunwrapparams":{"dc":{"Parameters":{"attestation-agent":["RW5hYmxlZA=="]}},"annotation":"` +
		base64.StdEncoding.EncodeToString(ann) + `"}}`
	root := cli.NewRoot()
	var out, errb bytes.Buffer
	root.SetIn(strings.NewReader(req))
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs([]string{"keyprovider", "--kbs", b.URL, "--tee", "sample"})
	if err := root.ExecuteContext(t.Context()); err != nil {
		t.Fatalf("keyprovider: %v\n%s", err, errb.String())
	}
	var resp struct {
		KeyUnwrapResults struct {
			OptsData []byte `json:"optsdata"`
		} `json:"keyunwrapresults"`
	}
	if err := json.Unmarshal(out.Bytes(), &resp); err != nil || !bytes.Equal(resp.KeyUnwrapResults.OptsData, privopts) {
		t.Fatalf("keyprovider output %s (%v), want optsdata %s", out.String(), err, privopts)
	}
	// A denied broker: non-zero exit, nothing on stdout.
	b.DenyAll(t)
	root = cli.NewRoot()
	out.Reset()
	root.SetIn(strings.NewReader(req))
	root.SetOut(&out)
	root.SetErr(io.Discard)
	root.SetArgs([]string{"keyprovider", "--kbs", b.URL, "--tee", "sample"})
	if err := root.ExecuteContext(t.Context()); err == nil || out.Len() != 0 {
		t.Errorf("denied: err = %v, stdout %q", err, out.String())
	}
}

func TestAgentServesCDHAndKeyprovider(t *testing.T) {
	b, kek := brokerWithKEK(t)
	rest, grpcAddr := testutil.FreeAddr(t), testutil.FreeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		root := cli.NewRoot()
		root.SetArgs([]string{"agent", "--kbs", b.URL, "--tee", "sample", "--listen", rest, "--keyprovider-grpc", grpcAddr, "--cdh-socket=", "--aa-socket="})
		done <- root.ExecuteContext(ctx)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("agent: %v", err)
		}
	}()
	testutil.WaitListening(t, rest)
	testutil.WaitListening(t, grpcAddr)

	resp, err := http.Get("http://" + rest + "/cdh/resource/default/image_key/app")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(got, kek) {
		t.Errorf("CDH resource: %d, %d bytes", resp.StatusCode, len(got))
	}

	cfg, err := keyprovider.ParseConfig([]byte(`{"key-providers":{"attestation-agent":{"grpc":"` + grpcAddr + `"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	u, err := cfg.Unwrapper("attestation-agent")
	if err != nil {
		t.Fatal(err)
	}
	privopts := []byte(`{"symkey":"a2V5","digest":"sha256:11","cipheroptions":{}}`)
	opts, err := u.Unwrap(t.Context(), aaAnnotation(t, kek, privopts, "kbs:///default/image_key/app"))
	if err != nil || !bytes.Equal(opts, privopts) {
		t.Fatalf("gRPC UnWrapKey = %s, %v", opts, err)
	}
	if _, err := u.Unwrap(t.Context(), aaAnnotation(t, kek, privopts, "kbs:///default/image_key/missing")); err == nil {
		t.Error("unwrap with a kid the broker lacks succeeded")
	}
	w, err := cfg.Wrapper("attestation-agent", "keypath=/etc/shadow::keyid=kbs:///default/image_key/app::algorithm=A256GCM")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Wrap(t.Context(), privopts); err == nil {
		t.Error("agent wrapped with a host file named by the caller")
	}
}

func TestKBSClientVerbs(t *testing.T) {
	b, kek := brokerWithKEK(t)
	out := mustCoffer(t, "kbs", "get-resource", "--url", b.URL, "--tee", "sample", "--path", "default/image_key/app")
	if out != string(kek) {
		t.Errorf("get-resource printed %d bytes, want the 32-byte KEK", len(out))
	}
	tok := strings.TrimSpace(mustCoffer(t, "kbs", "attest", "--url", b.URL, "--tee", "sample"))
	if strings.Count(tok, ".") != 2 {
		t.Errorf("attest printed %q, want a JWT", tok)
	}
	b.DenyAll(t)
	if _, _, err := coffer(t, "kbs", "get-resource", "--url", b.URL, "--tee", "sample", "--path", "default/image_key/app"); !errors.Is(err, spec.ErrPolicyDenied) {
		t.Errorf("denied get-resource: err = %v", err)
	}
}

// A token printed by `kbs admin-token` is accepted by the broker's admin API.
func TestKBSAdminToken(t *testing.T) {
	b := kbstest.New(t)
	tok := strings.TrimSpace(mustCoffer(t, "kbs", "admin-token", "--admin-key", b.AdminKeyFile, "--ttl", "5m"))
	req, _ := http.NewRequest(http.MethodPost, b.URL+"/kbs/v0/resource/default/k/t", strings.NewReader("v"))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("admin call with the printed token: HTTP %d", resp.StatusCode)
	}
	req.Header.Set("Authorization", "Bearer "+tok[:len(tok)-3]+"AAA")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Error("tampered admin token accepted")
	}
}
