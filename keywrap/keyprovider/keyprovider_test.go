package keyprovider

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/spec"
)

// The test binary doubles as a "cmd" keyprovider: with helperEnv set it
// serves one request through ServeCmd (or misbehaves on purpose) and exits.
const (
	helperEnv = "COFFER_KEYPROVIDER_TEST_HELPER"
	recordEnv = "COFFER_KEYPROVIDER_TEST_RECORD" // file receiving the raw request
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode))
	}
	os.Exit(m.Run())
}

func runHelper(mode string) int {
	switch mode {
	case "serve":
		in, err := io.ReadAll(os.Stdin)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if rec := os.Getenv(recordEnv); rec != "" {
			if err := os.WriteFile(rec, in, 0o600); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		if err := ServeCmd(context.Background(), &toyHandler{}, bytes.NewReader(in), os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "toy keyprovider:", err)
			return 1
		}
		return 0
	case "fail":
		_, _ = io.Copy(io.Discard, os.Stdin)
		fmt.Fprint(os.Stderr, "line one\n\nprovider exploded: reason\n")
		return 3
	case "hang":
		time.Sleep(time.Minute)
		return 0
	case "garbage":
		_, _ = io.Copy(io.Discard, os.Stdin)
		fmt.Print("not json")
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown helper mode", mode)
	return 2
}

// toyHandler "wraps" by XOR and records what it was sent. The annotation
// echoes the parameters it received so a child process can report them.
type toyHandler struct {
	mu         sync.Mutex
	lastParams map[string][][]byte
	lastDC     map[string][][]byte
	block      bool // wait for the context to end
}

type toyAnnotation struct {
	Params map[string][][]byte `json:"params"`
	Sealed []byte              `json:"sealed"`
}

func xor(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		out[i] = c ^ 0x5a
	}
	return out
}

func (h *toyHandler) WrapKey(ctx context.Context, params map[string][][]byte, optsData []byte) ([]byte, error) {
	h.mu.Lock()
	h.lastParams = params
	h.mu.Unlock()
	if h.block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if _, ok := params["fail"]; ok {
		return nil, fmt.Errorf("toy refuses: %w", spec.ErrPolicyDenied)
	}
	return json.Marshal(toyAnnotation{Params: params, Sealed: xor(optsData)})
}

func (h *toyHandler) UnwrapKey(ctx context.Context, dc map[string][][]byte, annotation []byte) ([]byte, error) {
	h.mu.Lock()
	h.lastDC = dc
	h.mu.Unlock()
	var a toyAnnotation
	if err := json.Unmarshal(annotation, &a); err != nil {
		return nil, fmt.Errorf("toy: bad annotation: %w", err)
	}
	if _, ok := a.Params["deny"]; ok {
		return nil, fmt.Errorf("toy: %w", spec.ErrPolicyDenied)
	}
	return xor(a.Sealed), nil
}

func testExe(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

func cmdConfig(t *testing.T, names ...string) *Config {
	t.Helper()
	provs := map[string]any{}
	for _, n := range names {
		provs[n] = map[string]any{"cmd": map[string]any{"path": testExe(t), "args": []string{"-test.run=^$"}}}
	}
	data := mustJSON(t, map[string]any{"key-providers": provs})
	c, err := ParseConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCmdRoundTrip(t *testing.T) {
	t.Setenv(helperEnv, "serve")
	rec := filepath.Join(t.TempDir(), "request.json")
	t.Setenv(recordEnv, rec)
	ctx := context.Background()
	c := cmdConfig(t, "toy")

	w, err := c.Wrapper("toy", "keyid=kbs:///a/b/c")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := w.Scheme(), "provider.toy"; got != want {
		t.Errorf("Scheme() = %q, want %q", got, want)
	}
	ann, err := w.Wrap(ctx, testPrivopts)
	if err != nil {
		t.Fatal(err)
	}
	sent, _ := os.ReadFile(rec)
	wantReq, _ := encodeWrapInput("toy", []byte("keyid=kbs:///a/b/c"), testPrivopts)
	if !bytes.Equal(sent, wantReq) {
		t.Errorf("wrap request on stdin:\n got %s\nwant %s", sent, wantReq)
	}
	var a toyAnnotation
	if err := json.Unmarshal(ann, &a); err != nil {
		t.Fatalf("annotation %q: %v", ann, err)
	}
	if want := map[string][][]byte{"toy": {[]byte("keyid=kbs:///a/b/c")}}; !reflect.DeepEqual(a.Params, want) {
		t.Errorf("provider received ec.Parameters %q, want %q", a.Params, want)
	}

	u, err := c.Unwrapper("toy")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := u.Scheme(), "provider.toy"; got != want {
		t.Errorf("Scheme() = %q, want %q", got, want)
	}
	got, err := u.Unwrap(ctx, ann)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, testPrivopts) {
		t.Errorf("unwrapped %q, want %q", got, testPrivopts)
	}
	sent, _ = os.ReadFile(rec)
	wantReq, _ = encodeUnwrapInput("toy", ann)
	if !bytes.Equal(sent, wantReq) {
		t.Errorf("unwrap request on stdin:\n got %s\nwant %s", sent, wantReq)
	}
}

func TestCmdFailures(t *testing.T) {
	c := cmdConfig(t, "toy")
	tests := []struct {
		mode      string
		timeout   time.Duration
		wantIn    []string
		wantCause error
	}{
		{mode: "fail", wantIn: []string{"exit status 3", "line one; provider exploded: reason"}},
		{mode: "garbage", wantIn: []string{"decoding keyprovider response"}},
		{mode: "hang", timeout: 300 * time.Millisecond, wantCause: context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			t.Setenv(helperEnv, tt.mode)
			ctx := context.Background()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			start := time.Now()
			w, _ := c.Wrapper("toy", "PARAMS-SECRET")
			_, werr := w.Wrap(ctx, testPrivopts)
			u, _ := c.Unwrapper("toy")
			_, uerr := u.Unwrap(ctx, testAnnotation)
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("took %v", d)
			}
			for _, err := range []error{werr, uerr} {
				if err == nil {
					t.Fatal("got no error")
				}
				for _, s := range tt.wantIn {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q lacks %q", err, s)
					}
				}
				if tt.wantCause != nil && !errors.Is(err, tt.wantCause) {
					t.Errorf("error %q does not wrap %v", err, tt.wantCause)
				}
				for _, secret := range []string{"PARAMS-SECRET", "symkey", b64(testPrivopts)} {
					if strings.Contains(err.Error(), secret) {
						t.Errorf("error %q leaks %q", err, secret)
					}
				}
			}
			if tt.wantCause == nil && !errors.Is(uerr, spec.ErrNoKey) {
				t.Errorf("unwrap error %q does not wrap ErrNoKey", uerr)
			}
		})
	}
}

func TestCmdMissingProgram(t *testing.T) {
	c, err := ParseConfig([]byte(`{"key-providers":{"x":{"cmd":{"path":"/nonexistent/keyprovider"}}}}`))
	if err != nil {
		t.Fatal(err)
	}
	u, _ := c.Unwrapper("x")
	_, err = u.Unwrap(context.Background(), testAnnotation)
	if err == nil || !errors.Is(err, spec.ErrNoKey) || !strings.Contains(err.Error(), "/nonexistent/keyprovider") {
		t.Errorf("err = %v, want ErrNoKey naming the program", err)
	}
}

// startServer serves h on 127.0.0.1 and returns the address.
func startServer(t *testing.T, register func(*grpc.Server)) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	register(s)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

func grpcConfig(t *testing.T, addr string, names ...string) *Config {
	t.Helper()
	provs := map[string]any{}
	for _, n := range names {
		provs[n] = map[string]any{"grpc": addr}
	}
	c, err := ParseConfig(mustJSON(t, map[string]any{"key-providers": provs}))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestGRPCRoundTrip(t *testing.T) {
	h := &toyHandler{}
	addr := startServer(t, func(s *grpc.Server) { RegisterGRPC(s, h) })
	c := grpcConfig(t, addr, "toy", "fail")
	ctx := context.Background()

	w, _ := c.Wrapper("toy", "")
	ann, err := w.Wrap(ctx, testPrivopts)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string][][]byte{"toy": {[]byte("Enabled")}}; !reflect.DeepEqual(h.lastParams, want) {
		t.Errorf("server received ec.Parameters %q, want %q", h.lastParams, want)
	}
	u, _ := c.Unwrapper("toy")
	got, err := u.Unwrap(ctx, ann)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, testPrivopts) {
		t.Errorf("unwrapped %q, want %q", got, testPrivopts)
	}
	if want := map[string][][]byte{"toy": {[]byte("Enabled")}}; !reflect.DeepEqual(h.lastDC, want) {
		t.Errorf("server received dc.Parameters %q, want %q", h.lastDC, want)
	}

	// Sentinels survive the wire.
	fw, _ := c.Wrapper("fail", "x")
	if _, err := fw.Wrap(ctx, testPrivopts); !errors.Is(err, spec.ErrPolicyDenied) {
		t.Errorf("wrap refused by server: err = %v, want ErrPolicyDenied", err)
	}
	denied := mustJSON(t, toyAnnotation{Params: map[string][][]byte{"deny": nil}, Sealed: []byte("x")})
	_, err = u.Unwrap(ctx, denied)
	if !errors.Is(err, spec.ErrPolicyDenied) || !errors.Is(err, spec.ErrNoKey) {
		t.Errorf("unwrap denied by server: err = %v, want ErrPolicyDenied and ErrNoKey", err)
	}
}

func TestGRPCTimeoutAndUnreachable(t *testing.T) {
	h := &toyHandler{block: true}
	addr := startServer(t, func(s *grpc.Server) { RegisterGRPC(s, h) })
	c := grpcConfig(t, addr, "toy")
	c.Timeout = 300 * time.Millisecond
	w, _ := c.Wrapper("toy", "x")
	start := time.Now()
	_, err := w.Wrap(context.Background(), testPrivopts)
	if err == nil || !strings.Contains(err.Error(), "DeadlineExceeded") {
		t.Errorf("err = %v, want a deadline error", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Config.Timeout not applied: took %v", d)
	}

	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := lis.Addr().String()
	lis.Close()
	c = grpcConfig(t, dead, "gone")
	u, _ := c.Unwrapper("gone")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := u.Unwrap(ctx, testAnnotation); err == nil {
		t.Error("unwrap through an unreachable provider succeeded")
	}
}

func TestGRPCServerRejectsBadRequests(t *testing.T) {
	h := &toyHandler{}
	addr := startServer(t, func(s *grpc.Server) { RegisterGRPC(s, h) })
	unwrapIn, _ := encodeUnwrapInput("toy", testAnnotation)
	tests := []struct {
		what, op string
		in       []byte
		want     string
	}{
		{"unwrap doc to WrapKey", opKeyWrap, unwrapIn, "InvalidArgument"},
		{"garbage", opKeyUnwrap, []byte("{"), "InvalidArgument"},
		{"unknown op", opKeyUnwrap, []byte(`{"op":"nope"}`), "InvalidArgument"},
	}
	for _, tt := range tests {
		t.Run(tt.what, func(t *testing.T) {
			_, err := callGRPC(context.Background(), addr, nil, tt.op, tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %s", err, tt.want)
			}
		})
	}
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		what, doc string
		names     []string
		wantErr   bool
	}{
		{"cmd and grpc providers", `{"key-providers":{"b":{"cmd":{"path":"/bin/kp","args":["-x"]}},"a":{"grpc":"127.0.0.1:5000"}}}`, []string{"a", "b"}, false},
		{"grpc with tls", `{"key-providers":{"a":{"grpc":"kp:5000","grpc-tls":{"root-ca-file":"/ca.pem","server-name":"kp"}}}}`, []string{"a"}, false},
		{"empty", `{}`, []string{}, false},
		{"both transports", `{"key-providers":{"a":{"grpc":"x:1","cmd":{"path":"/p"}}}}`, nil, true},
		{"no transport", `{"key-providers":{"a":{}}}`, nil, true},
		{"cmd without path", `{"key-providers":{"a":{"cmd":{"args":["x"]}}}}`, nil, true},
		{"name with colon", `{"key-providers":{"a:b":{"grpc":"x:1"}}}`, nil, true},
		{"not json", `key-providers:`, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.what, func(t *testing.T) {
			c, err := ParseConfig([]byte(tt.doc))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if got := c.Names(); !reflect.DeepEqual(got, tt.names) {
				t.Errorf("Names() = %q, want %q", got, tt.names)
			}
		})
	}

	c, _ := ParseConfig([]byte(`{"key-providers":{"b":{"cmd":{"path":"/bin/kp","args":["-x"]}},"a":{"grpc":"127.0.0.1:5000","grpc-tls":{"insecure-skip-verify":true}}}}`))
	if p, _ := c.Provider("b"); p.Command == nil || p.Command.Path != "/bin/kp" || !reflect.DeepEqual(p.Command.Args, []string{"-x"}) {
		t.Errorf("provider b = %+v", p)
	}
	if p, _ := c.Provider("a"); p.GRPC != "127.0.0.1:5000" || p.GRPCTLS == nil || !p.GRPCTLS.InsecureSkipVerify {
		t.Errorf("provider a = %+v", p)
	}
	if _, err := c.Wrapper("zzz", ""); !errors.Is(err, spec.ErrNotFound) {
		t.Errorf("Wrapper(unknown) err = %v, want ErrNotFound", err)
	}
	if _, err := (*Config)(nil).Unwrapper("a"); !errors.Is(err, spec.ErrNotFound) {
		t.Errorf("nil config Unwrapper err = %v, want ErrNotFound", err)
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "ocicrypt_keyprovider.conf")
	if err := os.WriteFile(p, []byte(`{"key-providers":{"attestation-agent":{"grpc":"127.0.0.1:50000"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Names(); !reflect.DeepEqual(got, []string{"attestation-agent"}) {
		t.Errorf("Names() = %q", got)
	}
	if _, err := LoadConfig(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: err = %v, want ErrNotExist", err)
	}
}

func TestTrimStderr(t *testing.T) {
	long := strings.Repeat("x", 2000) + "END"
	tests := []struct{ in, want string }{
		{"", ""},
		{"\n \n", ""},
		{"a\n\nb\r\nc\n", "a; b; c"},
		{"bad \xff byte", "bad ? byte"},
	}
	for _, tt := range tests {
		if got := trimStderr([]byte(tt.in)); got != tt.want {
			t.Errorf("trimStderr(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	got := trimStderr([]byte(long))
	if !strings.HasSuffix(got, "END") || len(got) > maxStderr+len("…") {
		t.Errorf("long stderr trimmed to %d bytes ending %q", len(got), got[len(got)-5:])
	}
}

func TestGRPCTarget(t *testing.T) {
	tests := []struct{ in, want string }{
		{"127.0.0.1:50000", "passthrough:///127.0.0.1:50000"},
		{"http://127.0.0.1:50000", "passthrough:///127.0.0.1:50000"},
		{"tcp://kp:1", "passthrough:///kp:1"},
		{"unix:///run/kp.sock", "unix:///run/kp.sock"},
		{"dns:///kp:1", "dns:///kp:1"},
	}
	for _, tt := range tests {
		if got := grpcTarget(tt.in); got != tt.want {
			t.Errorf("grpcTarget(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"key-providers":{"b":{"cmd":{"path":"/bin/kp","args":["-x"]}},"a":{"grpc":"127.0.0.1:5000"}}}`))
	f.Add([]byte(`{"key-providers":{"a":{}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		c, err := ParseConfig(data)
		if err != nil {
			return
		}
		for _, n := range c.Names() {
			p, _ := c.Provider(n)
			if (p.Command == nil) == (p.GRPC == "") {
				t.Fatalf("provider %q accepted with %d transports", n, map[bool]int{true: 2, false: 0}[p.Command != nil])
			}
		}
	})
}
