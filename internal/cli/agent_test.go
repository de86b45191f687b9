package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocicfg "github.com/containers/ocicrypt/config"
	ocikpcfg "github.com/containers/ocicrypt/config/keyprovider-config"
	ocikp "github.com/containers/ocicrypt/keywrap/keyprovider"

	"github.com/coffer-dev/coffer/keywrap/keyprovider"
	"github.com/coffer-dev/coffer/spec"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startAgent runs `coffer agent ARGS…` until the test ends and waits until
// both its listeners answer. It returns the REST and gRPC addresses and a
// function that stops the agent and returns RunE's error.
func startAgent(t *testing.T, args ...string) (rest, grpcAddr string, stop func() error) {
	t.Helper()
	rest, grpcAddr = freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	root := NewRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append([]string{"agent", "--listen", rest, "--keyprovider-grpc", grpcAddr, "--cdh-socket=", "--aa-socket="}, args...))
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	var result error
	stopped := false
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			select {
			case result = <-done:
			case <-time.After(15 * time.Second):
				result = errors.New("agent did not stop within 15s of cancellation")
			}
		}
		return result
	}
	t.Cleanup(func() { stop() })
	deadline := time.Now().Add(10 * time.Second)
	for _, addr := range []string{rest, grpcAddr} {
		for {
			c, err := net.Dial("tcp", addr)
			if err == nil {
				c.Close()
				break
			}
			select {
			case err := <-done:
				t.Fatalf("agent exited: %v (output %q)", err, out.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("agent not listening on %s: %v", addr, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return rest, grpcAddr, stop
}

func TestAgentServesCDHAndKeyprovider(t *testing.T) {
	const kid = "kbs:///default/image_key/app"
	b, kek := brokerWithKEK(t, "default/image_key/app")
	rest, grpcAddr, stop := startAgent(t, "--kbs", b.URL, "--tee", "sample")
	ctx := context.Background()

	// CDH REST API.
	resp, err := http.Get("http://" + rest + "/cdh/resource/default/image_key/app")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, kek) {
		t.Errorf("GET /cdh/resource = %d, %d bytes; want 200 and the KEK", resp.StatusCode, len(got))
	}

	// keyprovider gRPC, driven by coffer's keyprovider client.
	entry := sealAA(t, kek, kid, []byte(testPrivopts))
	cfg, err := keyprovider.ParseConfig([]byte(`{"key-providers":{"attestation-agent":{"grpc":"` + grpcAddr + `"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	u, err := cfg.Unwrapper("attestation-agent")
	if err != nil {
		t.Fatal(err)
	}
	if opts, err := u.Unwrap(ctx, entry); err != nil || string(opts) != testPrivopts {
		t.Errorf("coffer client UnWrapKey = %q, %v; want %q", opts, err, testPrivopts)
	}
	if _, err := u.Unwrap(ctx, sealAA(t, kek, "kbs:///default/image_key/none", []byte(testPrivopts))); err == nil {
		t.Error("UnWrapKey of a kid the broker does not hold succeeded")
	}

	// … and by ocicrypt's own keyprovider wrapper, as containerd and skopeo use it.
	oci := ocikp.NewKeyWrapper("attestation-agent", ocikpcfg.KeyProviderAttrs{Grpc: grpcAddr})
	dc := &ocicfg.DecryptConfig{Parameters: map[string][][]byte{"attestation-agent": {[]byte("Enabled")}}}
	if opts, err := oci.UnwrapKey(dc, entry); err != nil || string(opts) != testPrivopts {
		t.Errorf("ocicrypt UnwrapKey = %q, %v; want %q", opts, err, testPrivopts)
	}

	// WrapKey without a configured KEK is refused, even when the caller names a key file.
	keyFile := filepath.Join(t.TempDir(), "kek")
	os.WriteFile(keyFile, kek, 0o600)
	ec := &ocicfg.EncryptConfig{Parameters: map[string][][]byte{"attestation-agent": {[]byte("keypath=" + keyFile + "::keyid=" + kid)}}}
	if ann, err := oci.WrapKeys(ec, []byte(testPrivopts)); err == nil || !strings.Contains(err.Error(), "--wrap-kek") {
		t.Errorf("WrapKey without --wrap-kek = %q, %v; want a refusal naming --wrap-kek", ann, err)
	}
	w, err := cfg.Wrapper("attestation-agent", "keypath="+keyFile+"::keyid="+kid)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Wrap(ctx, []byte(testPrivopts)); !errors.Is(err, spec.ErrUnsupported) {
		t.Errorf("coffer client WrapKey without --wrap-kek: %v, want ErrUnsupported", err)
	}

	// SIGTERM (ctx cancel): both servers stop and the command returns cleanly.
	if err := stop(); err != nil {
		t.Fatalf("agent after cancel: %v", err)
	}
	for _, addr := range []string{rest, grpcAddr} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after shutdown", addr)
		}
	}
}

func TestAgentWrapsWithConfiguredKEK(t *testing.T) {
	const kid = "kbs:///default/image_key/app"
	b, kek := brokerWithKEK(t, "default/image_key/app")
	keyFile := filepath.Join(t.TempDir(), "kek")
	if err := os.WriteFile(keyFile, kek, 0o600); err != nil {
		t.Fatal(err)
	}
	_, grpcAddr, _ := startAgent(t, "--kbs", b.URL, "--tee", "sample", "--wrap-kek", keyFile, "--wrap-kid", kid)

	// A caller naming another file and kid still gets the configured KEK and kid.
	other := make([]byte, 32)
	rand.Read(other)
	otherFile := filepath.Join(t.TempDir(), "other")
	os.WriteFile(otherFile, other, 0o600)
	oci := ocikp.NewKeyWrapper("attestation-agent", ocikpcfg.KeyProviderAttrs{Grpc: grpcAddr})
	ec := &ocicfg.EncryptConfig{Parameters: map[string][][]byte{"attestation-agent": {[]byte("keypath=" + otherFile + "::keyid=kbs:///x/y/z")}}}
	ann, err := oci.WrapKeys(ec, []byte(testPrivopts))
	if err != nil {
		t.Fatalf("ocicrypt WrapKeys: %v", err)
	}
	gotKID, pt := openAA(t, kek, ann)
	if gotKID != kid || string(pt) != testPrivopts {
		t.Errorf("wrapped = kid %q privopts %q, want %q %q", gotKID, pt, kid, testPrivopts)
	}
	// And it round-trips through the broker.
	dc := &ocicfg.DecryptConfig{Parameters: map[string][][]byte{"attestation-agent": {[]byte("Enabled")}}}
	if opts, err := oci.UnwrapKey(dc, ann); err != nil || string(opts) != testPrivopts {
		t.Errorf("UnwrapKey of the agent's own annotation = %q, %v", opts, err)
	}
}

func TestAgentFlags(t *testing.T) {
	t.Setenv("COFFER_TEE", "sample") // no TEE here: flags other than --tee are under test
	b, _ := brokerWithKEK(t, "default/image_key/app")
	t.Setenv("COFFER_KBS_URL", "")
	for _, tc := range []struct {
		name string
		args []string
		want error
	}{
		{"no broker", []string{"agent"}, ErrUsage},
		{"kek without kid", []string{"agent", "--kbs", b.URL, "--wrap-kek", "/nonexistent"}, ErrUsage},
		{"unknown tee", []string{"agent", "--kbs", b.URL, "--tee", "nosuch"}, spec.ErrUnsupported},
		{"allowed host with scheme", []string{"agent", "--kbs", b.URL, "--allowed-host", "http://agent.internal"}, ErrUsage},
		{"allowed host with port", []string{"agent", "--kbs", b.URL, "--allowed-host", "agent.internal:8006"}, ErrUsage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := runCofferSplit(t, nil, tc.args...); !errors.Is(err, tc.want) {
				t.Errorf("coffer %v: %v, want %v", tc.args, err, tc.want)
			}
		})
	}
	// A short KEK file is rejected at start, not at the first WrapKey.
	short := filepath.Join(t.TempDir(), "short")
	os.WriteFile(short, []byte("short"), 0o600)
	if _, _, err := runCofferSplit(t, nil, "agent", "--kbs", b.URL, "--wrap-kek", short, "--wrap-kid", "kbs:///a/b/c"); err == nil {
		t.Error("agent started with a 5-byte KEK")
	}
	// A busy address fails with an error instead of hanging.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, _, err := runCofferSplit(t, nil, "agent", "--kbs", b.URL, "--listen", ln.Addr().String()); err == nil {
		t.Error("agent started on a busy address")
	}
}

// TestAgentRefusesDNSRebinding: through the command, a request a rebound web
// page would send is refused; loopback and --allowed-host names are served.
func TestAgentRefusesDNSRebinding(t *testing.T) {
	b, kek := brokerWithKEK(t, "default/image_key/app")
	rest, _, _ := startAgent(t, "--kbs", b.URL, "--tee", "sample", "--allowed-host", "agent.internal")
	for _, tc := range []struct {
		host, origin string
		status       int
	}{
		{"attacker.example", "http://attacker.example", http.StatusForbidden},
		{rest, "http://attacker.example", http.StatusForbidden},
		{rest, "", http.StatusOK},
		{"agent.internal:8006", "", http.StatusOK},
	} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+rest+"/cdh/resource/default/image_key/app", nil)
		req.Host = tc.host
		if tc.origin != "" {
			req.Header.Set("Origin", tc.origin)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || (tc.status == http.StatusOK) != bytes.Equal(got, kek) {
			t.Errorf("Host %s Origin %q: %d (%d bytes), want %d", tc.host, tc.origin, resp.StatusCode, len(got), tc.status)
		}
	}
}

// TestAgentUnixSockets: both services on unix sockets, as CoCo's CDH runs;
// the sockets are 0600 and gone after shutdown.
func TestAgentUnixSockets(t *testing.T) {
	const kid = "kbs:///default/image_key/app"
	b, kek := brokerWithKEK(t, "default/image_key/app")
	dir := filepath.Join(t.TempDir(), "run")
	restSock, kpSock := filepath.Join(dir, "agent.sock"), filepath.Join(dir, "keyprovider.sock")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root := NewRoot()
	root.SetOut(io.Discard)
	root.SetErr(io.Discard)
	root.SetArgs([]string{"agent", "--kbs", b.URL, "--tee", "sample", "--listen", "unix:" + restSock, "--keyprovider-grpc", "unix://" + kpSock, "--cdh-socket=", "--aa-socket="})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for _, p := range []string{restSock, kpSock} {
		for {
			c, err := net.Dial("unix", p)
			if err == nil {
				c.Close()
				break
			}
			select {
			case err := <-done:
				t.Fatalf("agent exited: %v", err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("agent not listening on %s: %v", p, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if fi, err := os.Lstat(p); err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, %v; want a 0600 socket", p, fi.Mode(), err)
		}
	}

	// No meaningful Host on a unix socket: any is served.
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", restSock)
	}}}
	resp, err := hc.Get("http://coffer-agent/cdh/resource/default/image_key/app")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, kek) {
		t.Errorf("GET over unix socket = %d, %d bytes; want 200 and the KEK", resp.StatusCode, len(got))
	}
	cfg, err := keyprovider.ParseConfig([]byte(`{"key-providers":{"attestation-agent":{"grpc":"unix:` + kpSock + `"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	u, err := cfg.Unwrapper("attestation-agent")
	if err != nil {
		t.Fatal(err)
	}
	if opts, err := u.Unwrap(context.Background(), sealAA(t, kek, kid, []byte(testPrivopts))); err != nil || string(opts) != testPrivopts {
		t.Errorf("UnWrapKey over unix socket = %q, %v", opts, err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("agent after cancel: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("agent did not stop within 15s of cancellation")
	}
	for _, p := range []string{restSock, kpSock} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s after shutdown: %v, want removed", p, err)
		}
	}
}
