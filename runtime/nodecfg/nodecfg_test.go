package nodecfg

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// node makes a coffer stand-in binary and a key directory holding one key,
// with correct modes.
func node(t *testing.T) (coffer, keys string) {
	t.Helper()
	dir := t.TempDir()
	coffer = filepath.Join(dir, "coffer")
	os.WriteFile(coffer, []byte("#!/bin/sh\n"), 0o755)
	keys = filepath.Join(dir, "keys")
	os.Mkdir(keys, 0o700)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	os.WriteFile(filepath.Join(keys, "node.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	return coffer, keys
}

func TestInstallKeepsTheFileAndIsIdempotent(t *testing.T) {
	t.Parallel()
	stock, err := os.ReadFile("testdata/debian-config.toml")
	if err != nil {
		t.Fatal(err)
	}
	coffer, keys := node(t)
	cfg := filepath.Join(t.TempDir(), "config.toml")
	os.WriteFile(cfg, stock, 0o640)
	in := Install{Coffer: coffer, KeysPath: keys}
	changed, err := InstallContainerd(cfg, in)
	if err != nil || !changed {
		t.Fatalf("install: changed %v, %v", changed, err)
	}
	first, _ := os.ReadFile(cfg)
	if !bytes.HasPrefix(first, stock) {
		t.Fatalf("the stock config was not kept byte for byte:\n%s", first)
	}
	if st, _ := os.Stat(cfg); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %04o, want the file's 0640", st.Mode().Perm())
	}
	if problems, err := Check(context.Background(), WithContainerdConfig(cfg)); err != nil || len(problems) != 0 {
		t.Errorf("check after install: %v %q", err, problems)
	}
	if changed, err := InstallContainerd(cfg, in); err != nil || changed {
		t.Errorf("second install: changed %v, %v", changed, err)
	}
	if again, _ := os.ReadFile(cfg); !bytes.Equal(again, first) {
		t.Error("second install changed the file")
	}
	// New settings replace the block in place.
	in.PerNamespace = true
	if changed, err := InstallContainerd(cfg, in); err != nil || !changed {
		t.Fatalf("install with new settings: %v %v", changed, err)
	}
	third, _ := os.ReadFile(cfg)
	if !bytes.HasPrefix(third, stock) || bytes.Count(third, []byte(beginMarker)) != 1 || !bytes.Contains(third, []byte("--per-namespace-keys")) {
		t.Errorf("block not replaced in place:\n%s", third)
	}
}

func TestInstallReplacesImgcryptDecoder(t *testing.T) {
	t.Parallel()
	coffer, keys := node(t)
	before := "version = 2\n# my settings\n[grpc]\n  address = \"/run/x.sock\"\n"
	imgcrypt := `[stream_processors]
  [stream_processors."io.containerd.ocicrypt.decoder.v1.tar.gzip"]
    accepts = ["application/vnd.oci.image.layer.v1.tar+gzip+encrypted"]
    returns = "application/vnd.oci.image.layer.v1.tar+gzip"
    path = "ctd-decoder"
    args = ["--decryption-keys-path", "/etc/containerd/ocicrypt/keys"]
  [stream_processors."io.containerd.ocicrypt.decoder.v1.tar"] # plain
    accepts = ["application/vnd.oci.image.layer.v1.tar+encrypted"]
    returns = "application/vnd.oci.image.layer.v1.tar"
    path = "ctd-decoder"
`
	after := "[plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"/opt\"\n"
	cfg := filepath.Join(t.TempDir(), "config.toml")
	os.WriteFile(cfg, []byte(before+imgcrypt+after), 0o644)
	if _, err := InstallContainerd(cfg, Install{Coffer: coffer, KeysPath: keys}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(cfg)
	block, _ := Install{Coffer: coffer, KeysPath: keys}.Stanza()
	if want := before + "[stream_processors]\n" + after + "\n" + block; string(got) != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	if problems, _ := Check(context.Background(), WithContainerdConfig(cfg)); len(problems) != 0 {
		t.Errorf("check: %q", problems)
	}
}

func TestInstallRefuses(t *testing.T) {
	t.Parallel()
	coffer, keys := node(t)
	for name, cfg := range map[string]string{
		"version 1":      "[plugins]\n",
		"invalid toml":   "version = 2\n[x\n",
		"inline decoder": "version = 2\nstream_processors = {\"io.containerd.ocicrypt.decoder.v1.tar\" = {accepts = [\"application/vnd.oci.image.layer.v1.tar+encrypted\"]}}\n",
	} {
		p := filepath.Join(t.TempDir(), "config.toml")
		os.WriteFile(p, []byte(cfg), 0o644)
		if _, err := InstallContainerd(p, Install{Coffer: coffer, KeysPath: keys}); err == nil {
			t.Errorf("%s: install succeeded", name)
		}
		if got, _ := os.ReadFile(p); string(got) != cfg {
			t.Errorf("%s: refused install changed the file", name)
		}
	}
}

func TestCheckFindsEachProblem(t *testing.T) {
	t.Parallel()
	coffer, keys := node(t)
	dir := t.TempDir()
	good, _ := Install{Coffer: coffer, KeysPath: keys}.Stanza()
	notExec := filepath.Join(dir, "not-exec")
	os.WriteFile(notExec, []byte("x"), 0o644)
	openDir := filepath.Join(dir, "open")
	os.Mkdir(openDir, 0o755)
	os.WriteFile(filepath.Join(openDir, "k.pem"), []byte("not a key"), 0o644)
	emptyDir := filepath.Join(dir, "empty")
	os.Mkdir(emptyDir, 0o700)
	kp := filepath.Join(dir, "kp.conf")
	os.WriteFile(kp, []byte(`{"key-providers":{"attestation-agent":{"grpc":"127.0.0.1:1"}}}`), 0o644)
	crio := filepath.Join(dir, "crio.conf")
	os.WriteFile(crio, []byte("[crio.runtime]\ndecryption_keys_path = \""+filepath.Join(dir, "nope")+"\"\n"), 0o644)
	with := func(in Install) string { s, _ := in.Stanza(); return "version = 2\n" + s }
	for _, tc := range []struct {
		name, cfg string
		crio      bool
		want      []string
	}{
		{"good", "version = 2\n" + good, false, nil},
		{"missing file", "", false, []string{"no such file"}},
		{"invalid toml", "version = \n", false, []string{"not valid TOML"}},
		{"version 1", strings.Replace("version = 2\n"+good, "version = 2", "version = 1", 1), false, []string{"config version 1"}},
		{"no stanza", "version = 2\n", false, []string{"no stream processor accepts application/vnd.oci.image.layer.v1.tar+gzip+encrypted", "+zstd+encrypted", "tar+encrypted"}},
		{"wrong returns", strings.Replace("version = 2\n"+good, `returns = "application/vnd.oci.image.layer.v1.tar+zstd"`, `returns = "application/vnd.oci.image.layer.v1.tar"`, 1), false, []string{`returns "application/vnd.oci.image.layer.v1.tar" for application/vnd.oci.image.layer.v1.tar+zstd+encrypted`}},
		{"decoder not executable", with(Install{Coffer: notExec, KeysPath: keys}), false, []string{"is not an executable file"}},
		{"keys dir missing", with(Install{Coffer: coffer, KeysPath: filepath.Join(dir, "missing")}), false, []string{"no such file or directory"}},
		{"keys dir open to all, no key", with(Install{Coffer: coffer, KeysPath: openDir}), false, []string{"accessible to every user", "is world-readable", "not a recognized private key", "holds no private key"}},
		{"keys dir empty", with(Install{Coffer: coffer, KeysPath: emptyDir}), false, []string{"holds no private key"}},
		{"keyprovider unreachable", with(Install{Coffer: coffer, KeysPath: keys, KeyProviderConfig: kp}), false, []string{`key provider "attestation-agent" at 127.0.0.1:1 is unreachable`}},
		{"crio keys missing", "version = 2\n" + good, true, []string{"decryption_keys_path: key directory"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := filepath.Join(t.TempDir(), "config.toml")
			if tc.cfg != "" {
				os.WriteFile(p, []byte(tc.cfg), 0o644)
			}
			opts := []CheckOption{WithContainerdConfig(p)}
			if tc.crio {
				opts = append(opts, WithCRIOConfig(crio))
			}
			got, err := Check(context.Background(), opts...)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d problems, want %d:\n%s", len(got), len(tc.want), strings.Join(got, "\n"))
			}
			for i, w := range tc.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("problem %d = %q, want it to mention %q", i, got[i], w)
				}
				if strings.Contains(got[i], "\n") {
					t.Errorf("problem %d spans lines", i)
				}
			}
		})
	}
}

func ExampleInstall_Stanza() {
	s, _ := Install{Coffer: "/usr/local/bin/coffer"}.Stanza()
	fmt.Print(s)
	// Output:
	// # BEGIN coffer stream processors (written by `coffer runtime install containerd`; edits inside are replaced)
	// [stream_processors."io.containerd.ocicrypt.decoder.v1.tar.gzip"]
	//   accepts = ["application/vnd.oci.image.layer.v1.tar+gzip+encrypted"]
	//   returns = "application/vnd.oci.image.layer.v1.tar+gzip"
	//   path = "/usr/local/bin/coffer"
	//   args = ["ctd-decoder", "--decryption-keys-path", "/etc/containerd/ocicrypt/keys", "--containerd-root", "/var/lib/containerd", "--containerd-address", "/run/containerd/containerd.sock"]
	// [stream_processors."io.containerd.ocicrypt.decoder.v1.tar.zstd"]
	//   accepts = ["application/vnd.oci.image.layer.v1.tar+zstd+encrypted"]
	//   returns = "application/vnd.oci.image.layer.v1.tar+zstd"
	//   path = "/usr/local/bin/coffer"
	//   args = ["ctd-decoder", "--decryption-keys-path", "/etc/containerd/ocicrypt/keys", "--containerd-root", "/var/lib/containerd", "--containerd-address", "/run/containerd/containerd.sock"]
	// [stream_processors."io.containerd.ocicrypt.decoder.v1.tar"]
	//   accepts = ["application/vnd.oci.image.layer.v1.tar+encrypted"]
	//   returns = "application/vnd.oci.image.layer.v1.tar"
	//   path = "/usr/local/bin/coffer"
	//   args = ["ctd-decoder", "--decryption-keys-path", "/etc/containerd/ocicrypt/keys", "--containerd-root", "/var/lib/containerd", "--containerd-address", "/run/containerd/containerd.sock"]
	// # END coffer stream processors
}
