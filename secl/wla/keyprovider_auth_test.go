package wla_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/secl/flavor"
	"github.com/coffer-dev/coffer/secl/wla"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/tpm"
	"github.com/coffer-dev/coffer/tpm/tpmtest"
)

// The helper half of TestW25KeyproviderAuth: run (as another user) by the
// test, it connects to the socket named by the environment and reports.
func TestHelperDialSocket(t *testing.T) {
	sock := os.Getenv("COFFER_TEST_DIAL_SOCKET")
	if sock == "" {
		t.Skip("helper process only")
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		os.Stdout.WriteString("REFUSED " + err.Error() + "\n")
		return
	}
	c.Close()
	os.Stdout.WriteString("CONNECTED\n")
}

func unwrapInput(annotation []byte) []byte {
	b, _ := json.Marshal(map[string]any{"op": "keyunwrap",
		"keywrapparams":   map[string]any{"ec": nil, "optsdata": nil},
		"keyunwrapparams": map[string]any{"dc": map[string]any{"Parameters": map[string]any{}}, "annotation": base64.StdEncoding.EncodeToString(annotation)}})
	return b
}

func callUnwrap(ctx context.Context, target string, annotation []byte, md ...string) ([]byte, error) {
	cc, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	if len(md) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, md...)
	}
	out := new(wrapperspb.BytesValue)
	err = cc.Invoke(ctx, "/keyprovider.KeyProviderService/UnWrapKey", wrapperspb.Bytes(unwrapInput(annotation)), out)
	return out.GetValue(), err
}

// W25: `wla keyprovider` listens on a unix socket 0600 by default: another
// user (nobody, no TPM access) cannot connect; the owner's call unwraps.
// TCP needs a token file (0600); a call without the bearer token is
// refused, with it served.
func TestW25KeyproviderAuth(t *testing.T) {
	ctx := t.Context()
	sw := tpmtest.StartSwtpm(t)
	host, err := tpm.Open(ctx, sw.Addr)
	if err != nil {
		t.Fatal(err)
	}
	w := setup(t, host)
	host.Close() // the keyprovider opens the TPM itself
	doc, _ := os.ReadFile(filepath.Join(w.dir, "flavor.json"))
	_, f, _ := flavor.Parse(doc)
	_, id, _ := flavor.ParseKeyURL(f.Encryption.KeyURL)
	p, _ := protocol.ParseResourcePath(flavor.KeyResource(id))
	key, _ := w.broker.Store.Get(ctx, p)
	ann, _ := flavor.SealAnnotation(key, f.Encryption.KeyURL, []byte(`{"layer":1}`))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	serve := func(c wla.KeyproviderConfig) (net.Addr, func()) {
		c.WLS, c.TPMAddr, c.BrokerKeys, c.LoopbackHTTP = w.wlsURL, sw.Addr, w.trust.BrokerKeys, true
		sctx, cancel := context.WithCancel(ctx)
		ready, done := make(chan net.Addr, 1), make(chan error, 1)
		go func() { done <- wla.ServeKeyprovider(sctx, c, log, func(a net.Addr) { ready <- a }) }()
		select {
		case a := <-ready:
			return a, func() { cancel(); <-done }
		case err := <-done:
			cancel()
			t.Fatalf("ServeKeyprovider: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("ServeKeyprovider did not start")
		}
		return nil, nil
	}

	// unix socket, in a directory others may traverse: the socket's own mode guards it
	sockDir, err := os.MkdirTemp("", "coffer-w25-") // t.TempDir's parent is 0700
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	os.Chmod(sockDir, 0o755)
	sock := filepath.Join(sockDir, "kp.sock")
	_, stop := serve(wla.KeyproviderConfig{Listen: "unix://" + sock})
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	if os.Geteuid() == 0 {
		// re-run this test binary as nobody and let it try the socket
		bin := filepath.Join(sockDir, "helper.test")
		self, _ := os.Executable()
		b, _ := os.ReadFile(self)
		os.WriteFile(bin, b, 0o755)
		cmd := exec.CommandContext(ctx, bin, "-test.run", "^TestHelperDialSocket$")
		cmd.Env = []string{"COFFER_TEST_DIAL_SOCKET=" + sock}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		t.Logf("as nobody: %s", strings.TrimSpace(string(out)))
		if err != nil || !strings.Contains(string(out), "REFUSED") || !strings.Contains(string(out), "permission denied") {
			t.Errorf("user nobody and the keyprovider socket: %v %s; want permission denied", err, out)
		}
	} else {
		t.Log("not root: the other-user half needs to switch to nobody; checked the socket mode only")
	}
	if got, err := callUnwrap(ctx, "unix://"+sock, ann); err != nil || !strings.Contains(string(got), base64.StdEncoding.EncodeToString([]byte(`{"layer":1}`))) {
		t.Fatalf("owner over the socket: %s, %v", got, err)
	}
	stop()

	// TCP: refused without a token file, or with one others can read
	err = wla.ServeKeyprovider(ctx, wla.KeyproviderConfig{Listen: "127.0.0.1:0", WLS: w.wlsURL, TPMAddr: sw.Addr, BrokerKeys: w.trust.BrokerKeys, LoopbackHTTP: true}, log, nil)
	if !errors.Is(err, spec.ErrUnsupported) || !strings.Contains(err.Error(), "token file") {
		t.Errorf("TCP without a token file: %v", err)
	}
	tokFile := filepath.Join(t.TempDir(), "kp.token")
	const tok = "0123456789abcdef0123456789abcdef"
	os.WriteFile(tokFile, []byte(tok+"\n"), 0o644)
	err = wla.ServeKeyprovider(ctx, wla.KeyproviderConfig{Listen: "127.0.0.1:0", TCPTokenFile: tokFile, WLS: w.wlsURL, TPMAddr: sw.Addr, BrokerKeys: w.trust.BrokerKeys, LoopbackHTTP: true}, log, nil)
	if !errors.Is(err, spec.ErrUnsupported) {
		t.Errorf("TCP with a 0644 token file: %v", err)
	}
	os.Chmod(tokFile, 0o600)
	addr, stop := serve(wla.KeyproviderConfig{Listen: "127.0.0.1:0", TCPTokenFile: tokFile})
	defer stop()
	target := "passthrough:///" + addr.String()
	for _, md := range [][]string{nil, {"authorization", "Bearer wrong"}, {"authorization", tok}} {
		_, err := callUnwrap(ctx, target, ann, md...)
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("TCP call with metadata %q: %v, want Unauthenticated", md, err)
		}
	}
	if got, err := callUnwrap(ctx, target, ann, "authorization", "Bearer "+tok); err != nil || len(got) == 0 {
		t.Errorf("TCP call with the token: %s, %v", got, err)
	}
}
