package ttrpc_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/coffer-dev/coffer/agent/client"
	"github.com/coffer-dev/coffer/agent/evidence"
	cofferttrpc "github.com/coffer-dev/coffer/agent/ttrpc"
	"github.com/coffer-dev/coffer/agent/ttrpc/gen/cdh"
	"github.com/coffer-dev/coffer/kbs/kbstest"
	"github.com/coffer-dev/coffer/transport"
)

// sampleInitData is init-data as CoCo's documentation writes it.
func sampleInitData(kbsURL string) string {
	return `version = "0.1.0"
algorithm = "sha256"
[data]
"aa.toml" = '''
[token_configs]
[token_configs.coco_as]
url = "http://127.0.0.1:8000"

[token_configs.kbs]
url = "` + kbsURL + `"
'''

"cdh.toml" = '''
socket = 'unix:///run/confidential-containers/cdh.sock'
credentials = []

[kbc]
name = "cc_kbc"
url = "` + kbsURL + `"

[image]
image_security_policy_uri = "kbs:///default/security-policy/reject"
authenticated_registry_credentials_uri = "kbs:///default/credential/reg"
'''

"policy.rego" = '''
package agent_policy
default AllowRequestsFailingPolicy := true
'''
`
}

func TestInitDataAnnotation(t *testing.T) {
	doc := sampleInitData("http://10.0.0.1:8080")
	ann, err := cofferttrpc.EncodeAnnotation([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	d, err := cofferttrpc.DecodeAnnotation(ann)
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256([]byte(doc))
	if !bytes.Equal(d.Digest, want[:]) || string(d.TOML) != doc || d.Algorithm != "sha256" {
		t.Errorf("digest %x, want %x (sha256 of the TOML as delivered)", d.Digest, want)
	}
	cfg, err := d.Config()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.KBSURL != "http://10.0.0.1:8080" || !strings.Contains(cfg.AgentPolicy, "agent_policy") || len(cfg.Options) != 3 {
		t.Errorf("config %+v", cfg)
	}
}

func TestInitDataAnnotationRefusals(t *testing.T) {
	gz := func(b []byte) string {
		var buf bytes.Buffer
		w := gzip.NewWriter(&buf)
		w.Write(b)
		w.Close()
		return base64.StdEncoding.EncodeToString(buf.Bytes())
	}
	for _, tc := range []struct{ name, ann, msg string }{
		{"not base64", "!!!", "not base64"},
		{"not gzip", base64.StdEncoding.EncodeToString([]byte("plain toml")), "not gzip"},
		{"bomb", gz(make([]byte, 64<<20)), "decompresses to more than"},
		{"oversized", strings.Repeat("A", cofferttrpc.MaxInitDataAnnotation+1), "at most"},
		{"bad version", gz([]byte("version = \"9\"\nalgorithm = \"sha256\"\n[data]\n")), `version "9"`},
		{"bad algorithm", gz([]byte("version = \"0.1.0\"\nalgorithm = \"md5\"\n[data]\n")), "md5"},
		{"deep", gz([]byte("version = \"0.1.0\"\nx = " + strings.Repeat("[", 100) + strings.Repeat("]", 100) + "\n")), "nested"},
		{"deep inside cdh.toml", gz([]byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"cdh.toml\" = '''\nx = " + strings.Repeat("[", 100) + strings.Repeat("]", 100) + "\n'''\n")), "nested"},
		{"bad kbs url", gz([]byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"cdh.toml\" = '''\n[kbc]\nurl = \"ftp://x\"\n'''\n")), "want http(s)"},
	} {
		d, err := cofferttrpc.DecodeAnnotation(tc.ann)
		if err == nil {
			_, err = d.Config()
		}
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.msg)
		}
	}
}

// Init-data configures a running agent: its cdh.toml names the broker's
// image security policy and registry credentials, which PullImage then uses.
func TestInitDataConfiguresPull(t *testing.T) {
	b := kbstest.New(t)
	b.AffirmSample(t)
	b.AllowAll(t)
	img := encryptedRegistryImage(t, b, "puller", "pw")
	host, _, _ := strings.Cut(img, "/")
	b.SetResource(t, "default/credential/reg", []byte(`{"auths":{"`+host+`":{"auth":"`+base64.StdEncoding.EncodeToString([]byte("puller:pw"))+`"}}}`))
	b.SetResource(t, "default/security-policy/reject", []byte(`{"default":[{"type":"reject"}],"transports":{"docker":{"`+host+`/app":[{"type":"insecureAcceptAnything"}]}}}`))
	ann, _ := cofferttrpc.EncodeAnnotation([]byte(sampleInitData(b.URL)))
	d, err := cofferttrpc.DecodeAnnotation(ann)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := d.Config()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg.KBSURL, client.WithAttester(evidence.Sample{}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := cofferttrpc.New(ctx, c, evidence.Sample{}, cfg.Options...)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(shortTempDir(t), "cdh.sock")
	ready := make(chan struct{})
	go srv.ListenAndServe(ctx, sock, "", func(_, _ net.Addr) { close(ready) })
	<-ready
	pc := cdh.NewImagePullServiceClient(dial(t, sock))
	bundle := t.TempDir()
	if _, err := pc.PullImage(ctx, &cdh.ImagePullRequest{ImageUrl: img, BundlePath: bundle}); err != nil {
		t.Fatalf("pull configured by init-data: %v", err)
	}
	if _, err := os.Stat(filepath.Join(bundle, "rootfs", "secret")); err != nil {
		t.Error(err)
	}
	// The same policy rejects the same image in another repository.
	creds := transport.WithCreds("puller:pw")
	src, _ := transport.Parse("docker://" + img)
	dst, _ := transport.Parse("docker://" + host + "/other:enc")
	a, done, err := transport.Read(ctx, src, creds)
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	if err := transport.Write(ctx, dst, a, creds); err != nil {
		t.Fatal(err)
	}
	_, err = pc.PullImage(ctx, &cdh.ImagePullRequest{ImageUrl: host + "/other:enc", BundlePath: t.TempDir()})
	wantCode(t, "rejected repository", err, codes.PermissionDenied, "")
}

func FuzzDecodeAnnotation(f *testing.F) {
	good, _ := cofferttrpc.EncodeAnnotation([]byte(sampleInitData("http://127.0.0.1:8080")))
	f.Add(good)
	min, _ := cofferttrpc.EncodeAnnotation([]byte("version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n"))
	f.Add(min)
	f.Add("")
	f.Add("H4sIAAAAAAAA/w==")
	deep, _ := cofferttrpc.EncodeAnnotation([]byte("version = \"0.1.0\"\na = " + strings.Repeat("{b=", 40)))
	f.Add(deep)
	f.Fuzz(func(t *testing.T, ann string) {
		start := time.Now()
		d, err := cofferttrpc.DecodeAnnotation(ann)
		if err == nil {
			if len(d.TOML) > cofferttrpc.MaxInitData || len(d.Digest) < 32 {
				t.Fatalf("accepted %d bytes with a %d-byte digest", len(d.TOML), len(d.Digest))
			}
			d.Config()
		}
		if el := time.Since(start); el > 2*time.Second {
			t.Fatalf("one input took %v", el)
		}
	})
}

// cdh.toml's inline [image.registry_config] (the form CDH's example
// config shows) blocks a prefix.
func TestInitDataInlineRegistryConfig(t *testing.T) {
	b := kbstest.New(t)
	b.AffirmSample(t)
	b.AllowAll(t)
	img := encryptedRegistryImage(t, b, "", "")
	host, _, _ := strings.Cut(img, "/")
	doc := "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"cdh.toml\" = '''\n[image.registry_config]\nunqualified-search-registries = [\"docker.io\"]\n[[image.registry_config.registry]]\nprefix = \"" + host + "/app\"\nblocked = true\n'''\n"
	d, err := cofferttrpc.ParseInitData([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := d.Config()
	if err != nil {
		t.Fatal(err)
	}
	u := start(t, b, nil, cfg.Options...)
	_, err = u.pullc.PullImage(context.Background(), &cdh.ImagePullRequest{ImageUrl: img, BundlePath: t.TempDir()})
	wantCode(t, "inline blocked", err, codes.PermissionDenied, "blocked by the registry configuration")
}

// The agent sends the init-data with its attestation: the broker's token
// carries its digest (the init_data claim), what the broker's policy checks.
func TestInitDataReachesTheBroker(t *testing.T) {
	b := kbstest.New(t)
	b.AffirmSample(t)
	b.AllowAll(t)
	doc := sampleInitData(b.URL)
	ann, _ := cofferttrpc.EncodeAnnotation([]byte(doc))
	f := filepath.Join(t.TempDir(), "initdata")
	os.WriteFile(f, []byte(ann), 0o600)
	cfg, err := cofferttrpc.ReadInitData(f)
	if err != nil {
		t.Fatal(err)
	}
	copts, err := cfg.ClientOptions()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg.KBSURL, append(copts, client.WithAttester(evidence.Sample{}))...)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := c.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte(doc))
	if want := base64.StdEncoding.EncodeToString(d[:]); !strings.Contains(string(payload), want) {
		t.Errorf("token claims %s lack the init-data digest %s", payload, want)
	}
}
