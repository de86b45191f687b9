package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/kbs/policy"
	"github.com/coffer-dev/coffer/kbs/server"
	"github.com/coffer-dev/coffer/kbs/token"
)

const trusteeData = "testdata/trustee-v0.14.0/"

// trustee's own configuration files load unchanged, each key where
// trustee documents it; what coffer cannot honour is refused by name.
func TestTrusteeConfigFilesLoad(t *testing.T) {
	for _, tc := range []struct {
		file  string
		check func(t *testing.T, c server.Config)
	}{
		{"kbs-config.toml", func(t *testing.T, c server.Config) {
			if c.Listen != "127.0.0.1:8080" || c.TLSCert != "" || !c.InsecureAdmin || c.Store != "fs" ||
				c.Repository != "/opt/confidential-containers/kbs/repository" || c.TokenTTL != 5*time.Minute {
				t.Errorf("%+v", c)
			}
			if !strings.Contains(strings.Join(c.Notes, "\n"), "policy_engine.policy_path /opa/confidential-containers/kbs/policy.rego does not exist") {
				t.Errorf("notes %q", c.Notes)
			}
		}},
		{"kubernetes-base-kbs-config.toml", func(t *testing.T, c server.Config) {
			if c.Listen != "0.0.0.0:8080" || c.InsecureAdmin || !reflect.DeepEqual(c.AdminPublicKeys, []string{"/kbs/kbs.pem"}) {
				t.Errorf("%+v", c)
			}
		}},
		{"test-config-kbs.toml", func(t *testing.T, c server.Config) {
			if c.Listen != "127.0.0.1:8080" || c.TLSKey != "./work/https.key" || c.TLSCert != "./work/https.crt" ||
				!reflect.DeepEqual(c.TrustedTokenCerts, []string{"./work/ca-cert.pem"}) || c.TokenKey != "./work/token.key" ||
				c.TokenCert != "./work/token-cert-chain.pem" || !reflect.DeepEqual(c.AdminPublicKeys, []string{"./work/kbs.pem"}) ||
				c.Repository != "./work/repository" {
				t.Errorf("%+v", c)
			}
		}},
		{"coco-as-builtin-2.toml", func(t *testing.T, c server.Config) {
			if c.Listen != "0.0.0.0:8080" || !reflect.DeepEqual(c.AdminPublicKeys, []string{"/kbs/kbs.pem"}) {
				t.Errorf("%+v", c)
			}
		}},
		{"coco-as-builtin-3.toml", func(t *testing.T, c server.Config) {
			if !c.InsecureAdmin || c.Repository != "/opt/confidential-containers/kbs/repository" {
				t.Errorf("%+v", c)
			}
		}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			c, err := server.LoadConfig(trusteeData + tc.file)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
	for file, want := range map[string]string{
		"docker-compose-kbs-config.toml": `attestation_service.type = "coco_as_grpc"`,
		"kbs-config-grpc.toml":           `attestation_service.type = "coco_as_grpc"`,
		"coco-as-builtin-1.toml":         "insecure_http is false (trustee's default) but private_key and certificate are not both set",
	} {
		if _, err := server.LoadConfig(trusteeData + file); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want a refusal naming %s", file, err, want)
		}
	}
}

// A key trustee's layout does not have is refused with its name.
func TestTrusteeConfigUnknownKeys(t *testing.T) {
	base, err := os.ReadFile(trusteeData + "kubernetes-base-kbs-config.toml")
	if err != nil {
		t.Fatal(err)
	}
	for extra, want := range map[string]string{
		"[policy_engine]\npolicy_pth = \"/x\"\n":                               "policy_engine.policy_pth",
		"[[plugins]]\nname = \"resource\"\ntype = \"LocalFs\"\ndir = \"/x\"\n": "plugins[0].dir",
		"[[plugins]]\nname = \"nebula_ca\"\ntype = \"SelfSigned\"\n":           `plugin "nebula_ca"`,
		"listen = \"127.0.0.1:1\"\n":                                           "listen", // coffer's flat keys do not mix in
	} {
		p := filepath.Join(t.TempDir(), "kbs-config.toml")
		if err := os.WriteFile(p, append([]byte(extra), append([]byte("\n"), base...)...), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := server.LoadConfig(p); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("with %q: %v, want an error naming %s", extra, err, want)
		}
	}
	p := filepath.Join(t.TempDir(), "kbs-config.toml")
	typo := strings.Replace(string(base), "[attestation_token]\n", "[attestation_token]\ninsecure_keys = true\n", 1)
	if err := os.WriteFile(p, []byte(typo), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := server.LoadConfig(p); err == nil || !strings.Contains(err.Error(), "unknown key attestation_token.insecure_keys") {
		t.Errorf("a misspelt key: %v", err)
	}
}

func writePEMFile(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// trustee's test configuration (relative ./work paths) with the files it
// names made: the broker's options build from it, TLS, token signer and
// its chain, trusted token CA, admin key and resource policy included.
func TestTrusteeTestConfigBuildsAServer(t *testing.T) {
	src, err := filepath.Abs(trusteeData + "test-config-kbs.toml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	t.Chdir(dir)
	work := filepath.Join(dir, "work")
	if err := os.MkdirAll(filepath.Join(work, "repository"), 0o700); err != nil {
		t.Fatal(err)
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kbs"}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(k)
	for _, f := range []string{"https.crt", "ca-cert.pem", "token-cert-chain.pem"} {
		writePEMFile(t, filepath.Join(work, f), "CERTIFICATE", der)
	}
	writePEMFile(t, filepath.Join(work, "https.key"), "PRIVATE KEY", kd)
	writePEMFile(t, filepath.Join(work, "token.key"), "PRIVATE KEY", kd)
	_, pub, err := token.GenerateAdminKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "kbs.pem"), pub, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "kbs-policy.rego"), []byte(policy.ResourceAllowAll), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := server.LoadConfig(src)
	if err != nil {
		t.Fatal(err)
	}
	if c.ResourcePolicyFile != "./work/kbs-policy.rego" {
		t.Errorf("policy_path not mapped: %q", c.ResourcePolicyFile)
	}
	opts, closer, err := c.Options(context.Background(), files(t, c), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer closer()
	if _, err := server.New(context.Background(), opts...); err != nil {
		t.Fatal(err)
	}
}
