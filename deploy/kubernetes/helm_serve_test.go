package kubernetes

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/coffer-dev/coffer/internal/cli"
	"github.com/coffer-dev/coffer/internal/testutil"
	"github.com/coffer-dev/coffer/kbs/store/postgres/pgtest"
)

var pg pgtest.Shared

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, &pg)) }

// coffer runs one coffer command in-process.
func coffer(ctx context.Context, args ...string) (string, error) {
	root := cli.NewRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

// podOnHost lays out what kubelet would give a pod of the rendered
// Deployment on this machine: every secret volume a container mounts,
// written under root at its mountPath with the volume's items and
// defaultMode, from the rendered Secrets. It returns the container's
// command line with every absolute path rebased under root and --listen
// moved to listen, so the broker reads exactly the files the chart mounts.
func podOnHost(t *testing.T, m *manifests, c corev1.Container, root, listen string) []string {
	t.Helper()
	volumes := map[string]corev1.Volume{}
	for _, v := range m.deploy.Spec.Template.Spec.Volumes {
		volumes[v.Name] = v
	}
	for _, vm := range c.VolumeMounts {
		v := volumes[vm.Name]
		if v.Secret == nil {
			t.Fatalf("container %s mounts %s, not a secret volume", c.Name, vm.Name)
		}
		s := m.secrets[v.Secret.SecretName]
		if s == nil {
			t.Fatalf("secret %s not rendered", v.Secret.SecretName)
		}
		dir := filepath.Join(root, vm.MountPath)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, it := range v.Secret.Items {
			data, ok := s.Data[it.Key]
			if !ok {
				t.Fatalf("secret %s has no key %s", s.Name, it.Key)
			}
			p := filepath.Join(dir, it.Path)
			if err := os.WriteFile(p, data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, os.FileMode(*v.Secret.DefaultMode)); err != nil { // as kubelet: 0440
				t.Fatal(err)
			}
		}
	}
	var args []string
	for _, a := range append(slices.Clone(c.Command), c.Args...) {
		switch k, v, ok := strings.Cut(a, "="); {
		case k == "--listen":
			a = "--listen=" + listen
		case ok && strings.HasPrefix(v, "/"):
			a = k + "=" + filepath.Join(root, v)
		case strings.HasPrefix(a, "/"):
			a = filepath.Join(root, a)
		}
		args = append(args, a)
	}
	return args
}

// tree lists the files under root with their sizes and modes.
func tree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		out = append(out, fmt.Sprintf("%s %d %v", strings.TrimPrefix(p, root), fi.Size(), fi.Mode()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// writePEM writes a PEM block to dir/name (0600) and returns the path.
func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// brokerKeys are real keys of a broker deployment, as files.
type brokerKeys struct {
	dir, kekFile, tokenFile, adminKey, certFile, tlsKeyFile, urlFile string
	certPEM                                                          []byte
}

func read(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newBrokerKeys makes a raw 32-byte KEK, a P-256 token key, an Ed25519
// admin key (coffer kbs keygen-admin), a TLS pair for the Service name
// coffer-kbs.coffer.svc (and 127.0.0.1), and a file holding dbURL.
func newBrokerKeys(t *testing.T, dbURL string) *brokerKeys {
	t.Helper()
	k := &brokerKeys{dir: t.TempDir()}
	kek := make([]byte, 32)
	_, _ = rand.Read(kek)
	k.kekFile = writeFile(t, k.dir, "store.kek", kek)
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalECPrivateKey(ek)
	k.tokenFile = writeFile(t, k.dir, "token.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	k.adminKey = filepath.Join(k.dir, "admin.key")
	if out, err := coffer(context.Background(), "kbs", "keygen-admin", "--out", k.adminKey); err != nil {
		t.Fatalf("keygen-admin: %v: %s", err, out)
	}
	const serverName = "coffer-kbs.coffer.svc"
	tk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: serverName},
		DNSNames: []string{serverName}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &tk.PublicKey, tk)
	if err != nil {
		t.Fatal(err)
	}
	k.certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER})
	k.certFile = writeFile(t, k.dir, "tls.crt", k.certPEM)
	tkDER, _ := x509.MarshalECPrivateKey(tk)
	k.tlsKeyFile = writeFile(t, k.dir, "tls.key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: tkDER}))
	k.urlFile = writeFile(t, k.dir, "db-url", []byte(dbURL))
	return k
}

// TestHelmChartBrokerServes renders the chart with real keys (through
// --set-file) and a real PostgreSQL database, then serves it (servePods).
func TestHelmChartBrokerServes(t *testing.T) {
	helm := testutil.Helm(t)
	k := newBrokerKeys(t, pg.Need(t))
	m, err := render(t, helm, "replicaCount: 2\nserviceMonitor: {enabled: true}\n", 2,
		"--set", "secrets.keys.create=true,secrets.db.create=true,secrets.tls.create=true",
		"--set-file", "secrets.keys.storeKek="+k.kekFile,
		"--set-file", "secrets.keys.tokenKey="+k.tokenFile,
		"--set-file", "secrets.keys.adminPublicKey="+k.adminKey+".pub",
		"--set-file", "secrets.db.url="+k.urlFile,
		"--set-file", "secrets.tls.cert="+k.certFile,
		"--set-file", "secrets.tls.key="+k.tlsKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if errs := append(check(m), checkChart(m)...); len(errs) > 0 {
		t.Fatal(errs)
	}
	servePods(t, m, k)
}

// TestKustomizeBrokerServes serves the kustomize base the same way, with
// its Secrets (the names and keys of secrets.example.yaml) holding real keys.
func TestKustomizeBrokerServes(t *testing.T) {
	k := newBrokerKeys(t, pg.Need(t))
	m := load(t)
	if errs := check(m); len(errs) > 0 {
		t.Fatal(errs)
	}
	secret := func(name string, data map[string][]byte) {
		if m.secrets[name] == nil {
			t.Fatalf("secrets.example.yaml has no %s", name)
		}
		for key := range data {
			if _, ok := m.secrets[name].StringData[key]; !ok {
				t.Fatalf("secrets.example.yaml: %s has no key %s", name, key)
			}
		}
		m.secrets[name] = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: data}
	}
	secret("coffer-kbs-keys", map[string][]byte{"store.kek": read(t, k.kekFile), "token.pem": read(t, k.tokenFile), "admin.pub": read(t, k.adminKey+".pub")})
	secret("coffer-kbs-db", map[string][]byte{"url": read(t, k.urlFile)})
	secret("coffer-kbs-tls", map[string][]byte{"tls.crt": k.certPEM, "tls.key": read(t, k.tlsKeyFile)})
	servePods(t, m, k)
}

// servePods lays out two replicas' pods of the rendered Deployment on this
// machine (podOnHost: the mounted Secrets at their paths and modes), runs
// the init container (coffer kbs migrate) and the broker command of each,
// and probes them as kubelet and Prometheus would: readiness and liveness
// by the rendered probes, /metrics by the ServiceMonitor's endpoint (or the
// scrape annotations), over TLS checked for the Service's name. An admin
// write through one replica is listed by the other: they share the store.
func servePods(t *testing.T, m *manifests, k *brokerKeys) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	certPEM, certFile, adminKey := k.certPEM, k.certFile, k.adminKey
	keys := k.dir
	pod := m.deploy.Spec.Template.Spec
	c, ic := pod.Containers[0], pod.InitContainers[0]
	serverName := m.service.Name + "." + m.service.Namespace + ".svc"
	if m.service.Namespace == "" { // the kustomize base: applied to a namespace of the operator's choice
		serverName = m.service.Name + ".coffer.svc"
	}
	metricsPath := m.deploy.Spec.Template.Annotations["prometheus.io/path"]
	if m.serviceMonitor != nil {
		e := m.serviceMonitor.Spec.Endpoints[0]
		serverName, metricsPath = e.TLSConfig.ServerName, e.Path
	}

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: serverName, MinVersion: tls.VersionTLS12},
	}}
	get := func(addr, path string) (int, string) {
		resp, err := hc.Get("https://" + addr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return resp.StatusCode, string(body)
	}

	var addrs []string
	var done []chan error
	for i := range 2 {
		root := t.TempDir()
		addr := freeAddr(t)
		addrs = append(addrs, addr)
		migrate := podOnHost(t, m, ic, root, addr)
		want := "already at version"
		if i == 0 {
			want = "migrated from version 0"
		}
		if out, err := coffer(ctx, migrate...); err != nil || !strings.Contains(out, want) {
			t.Fatalf("replica %d init container %v: %v: %q, want %q", i, migrate, err, out, want)
		}
		serve := podOnHost(t, m, c, root, addr)
		before := tree(t, root)
		t.Cleanup(func() {
			// The mounts are read-only in a pod: the broker must not need to write there.
			if after := tree(t, root); !slices.Equal(before, after) {
				t.Errorf("replica %d wrote into its mounts: %v, then %v", i, before, after)
			}
		})
		exited := make(chan error, 1)
		done = append(done, exited)
		go func() {
			out, err := coffer(ctx, serve...)
			if err != nil {
				err = fmt.Errorf("%w: %s", err, out)
			}
			exited <- err
		}()
	}
	for i, addr := range addrs {
		for _, pr := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
			if pr.HTTPGet.Scheme != corev1.URISchemeHTTPS {
				t.Fatalf("probe scheme %s", pr.HTTPGet.Scheme)
			}
			deadline := time.Now().Add(30 * time.Second)
			for {
				code, body := get(addr, pr.HTTPGet.Path)
				if code == http.StatusOK {
					break
				}
				select {
				case err := <-done[i]:
					t.Fatalf("replica %d: the broker exited before its probe %s passed: %v", i, pr.HTTPGet.Path, err)
				case <-time.After(50 * time.Millisecond):
				}
				if time.Now().After(deadline) {
					t.Fatalf("replica %d: probe %s: %d %s", i, pr.HTTPGet.Path, code, body)
				}
			}
		}
		if code, body := get(addr, metricsPath); code != http.StatusOK || !strings.Contains(body, "kbs_http_requests_total") {
			t.Fatalf("replica %d: scrape %s: %d %.200s", i, metricsPath, code, body)
		}
	}
	// The mounted admin public key authenticates the admin; the replicas share the store.
	value := writeFile(t, keys, "value", []byte("chart-secret-value"))
	admin := func(addr string, args ...string) string {
		out, err := coffer(ctx, append(args, "--url", "https://"+addr, "--admin-key", adminKey, "--cacert", certFile)...)
		if err != nil {
			t.Fatalf("%v on %s: %v: %s", args, addr, err, out)
		}
		return out
	}
	admin(addrs[0], "kbs", "set-resource", "--path", "tenant/key/chart", "--resource-file", value)
	if out := admin(addrs[1], "kbs", "list-resources"); !strings.Contains(out, "tenant/key/chart") || strings.Contains(out, "chart-secret-value") {
		t.Fatalf("replica 1 does not list what replica 0 stored: %q", out)
	}
	cancel()
	for _, exited := range done {
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("a replica did not shut down")
		}
	}
}
