package keyprovider

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// selfSigned writes a CA-less self-signed server certificate for name and
// returns the server TLS certificate and the PEM file path.
func selfSigned(t *testing.T, name string) (tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              []string{name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, p
}

func TestGRPCTLS(t *testing.T) {
	cert, caFile := selfSigned(t, "kp.test")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})))
	RegisterGRPC(s, &toyHandler{})
	go func() { _ = s.Serve(lis) }()
	defer s.Stop()
	addr := lis.Addr().String()
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		what    string
		tls     map[string]any
		wantErr string
	}{
		{"trusted root and server name", map[string]any{"root-ca-file": caFile, "server-name": "kp.test"}, ""},
		{"wrong server name", map[string]any{"root-ca-file": caFile, "server-name": "other.test"}, "certificate"},
		{"system roots only", map[string]any{"server-name": "kp.test"}, "certificate"},
		{"root file without PEM", map[string]any{"root-ca-file": notPEM}, "no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.what, func(t *testing.T) {
			c, err := ParseConfig(mustJSON(t, map[string]any{"key-providers": map[string]any{"toy": map[string]any{"grpc": addr, "grpc-tls": tt.tls}}}))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			w, _ := c.Wrapper("toy", "x")
			_, err = w.Wrap(ctx, testPrivopts)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("wrap over TLS: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func BenchmarkGRPCRoundTrip(b *testing.B) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := grpc.NewServer()
	RegisterGRPC(s, &toyHandler{})
	go func() { _ = s.Serve(lis) }()
	defer s.Stop()
	c, _ := ParseConfig([]byte(`{"key-providers":{"toy":{"grpc":"` + lis.Addr().String() + `"}}}`))
	w, _ := c.Wrapper("toy", "x")
	u, _ := c.Unwrapper("toy")
	ctx := context.Background()
	for b.Loop() {
		ann, err := w.Wrap(ctx, testPrivopts)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := u.Unwrap(ctx, ann); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCmdRoundTrip(b *testing.B) {
	b.Setenv(helperEnv, "serve")
	exe, _ := os.Executable()
	c, _ := ParseConfig([]byte(`{"key-providers":{"toy":{"cmd":{"path":"` + exe + `","args":["-test.run=^$"]}}}}`))
	w, _ := c.Wrapper("toy", "x")
	u, _ := c.Unwrapper("toy")
	ctx := context.Background()
	for b.Loop() {
		ann, err := w.Wrap(ctx, testPrivopts)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := u.Unwrap(ctx, ann); err != nil {
			b.Fatal(err)
		}
	}
}
