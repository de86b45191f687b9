package nodecfg

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

func TestInstallCRIOnDebianConfig(t *testing.T) {
	t.Parallel()
	stock, err := os.ReadFile("testdata/debian-config.toml")
	if err != nil {
		t.Fatal(err)
	}
	coffer, keys := node(t)
	cfg := filepath.Join(t.TempDir(), "config.toml")
	os.WriteFile(cfg, stock, 0o644)
	in := Install{Coffer: coffer, KeysPath: keys, CRI: true, PerImage: true, SandboxImage: "127.0.0.1:5000/pause:1", Mirrors: []string{"127.0.0.1:5000"}}
	if _, err := InstallContainerd(cfg, in); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(cfg)
	// Every stock line is kept, the block sits right under the CRI header.
	if !bytes.Contains(got, []byte(criHeader+"\n"+criBegin)) {
		t.Errorf("CRI block not under the stock header:\n%s", got)
	}
	if cut, _, _ := cutBlock(got, criBegin, criEnd); !bytes.HasPrefix(cut, stock) {
		t.Errorf("stock config not kept:\n%s", cut)
	}
	var parsed struct {
		Plugins map[string]struct {
			Restrict        bool   `toml:"restrict_oom_score_adj"`
			SandboxImage    string `toml:"sandbox_image"`
			ImageDecryption struct {
				KeyModel string `toml:"key_model"`
			} `toml:"image_decryption"`
			Containerd struct {
				DisableSnapshotAnnotations *bool `toml:"disable_snapshot_annotations"`
			} `toml:"containerd"`
			Registry struct {
				Mirrors map[string]struct{ Endpoint []string } `toml:"mirrors"`
			} `toml:"registry"`
			CNI struct {
				BinDir string `toml:"bin_dir"`
			} `toml:"cni"`
		} `toml:"plugins"`
	}
	if _, err := toml.Decode(string(got), &parsed); err != nil {
		t.Fatal(err)
	}
	c := parsed.Plugins[CRIPlugin]
	if !c.Restrict || c.SandboxImage != in.SandboxImage || c.ImageDecryption.KeyModel != "node" ||
		c.Containerd.DisableSnapshotAnnotations == nil || *c.Containerd.DisableSnapshotAnnotations ||
		!reflect.DeepEqual(c.Registry.Mirrors["127.0.0.1:5000"].Endpoint, []string{"http://127.0.0.1:5000"}) || c.CNI.BinDir != "/usr/lib/cni" {
		t.Errorf("CRI settings as containerd reads them: %+v", c)
	}
	if problems, err := Check(context.Background(), WithContainerdConfig(cfg)); err != nil || len(problems) != 0 {
		t.Errorf("check after install --cri --per-image-keys: %v %q", err, problems)
	}
	// Per-image keys without CRI's snapshot labels: check says so.
	noCRI := filepath.Join(t.TempDir(), "config.toml")
	os.WriteFile(noCRI, stock, 0o644)
	InstallContainerd(noCRI, Install{Coffer: coffer, KeysPath: keys, PerImage: true})
	if problems, _ := Check(context.Background(), WithContainerdConfig(noCRI)); len(problems) != 1 || !strings.Contains(problems[0], "disable_snapshot_annotations = false") {
		t.Errorf("per-image keys without CRI labels: %q", problems)
	}
	// Read back, merged, idempotent; --cri=false removes the block.
	back, found, err := Installed(cfg)
	want, _ := in.withDefaults()
	if err != nil || !found || !reflect.DeepEqual(back, want) {
		t.Errorf("Installed = %+v, %v, %v; want %+v", back, found, err, want)
	}
	if changed, err := UpdateContainerd(cfg, nil); err != nil || changed {
		t.Errorf("re-run: changed %v, %v", changed, err)
	}
	if _, err := UpdateContainerd(cfg, func(in *Install) { in.CRI = false }); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(cfg); bytes.Contains(got, []byte(criBegin)) || !bytes.HasPrefix(got, stock) {
		t.Errorf("--cri=false left:\n%s", got)
	}
}

func TestInstallCRIWithoutHeaderAndRefusals(t *testing.T) {
	t.Parallel()
	coffer, keys := node(t)
	in := Install{Coffer: coffer, KeysPath: keys, CRI: true}
	p := filepath.Join(t.TempDir(), "config.toml")
	if _, err := InstallContainerd(p, in); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	if !bytes.Contains(got, []byte(criBegin+"\n"+criHeader+"\n")) {
		t.Errorf("no header written with the block:\n%s", got)
	}
	if _, err := InstallContainerd(p, in); err != nil {
		t.Errorf("second run: %v", err)
	}
	if again, _ := os.ReadFile(p); !bytes.Equal(again, got) {
		t.Errorf("second run changed the file:\n%s", again)
	}
	for name, tc := range map[string]struct {
		cfg  string
		in   Install
		want string
	}{
		"own key_model": {"version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".image_decryption]\n  key_model = \"node\"\n", in, `has its own [plugins."io.containerd.grpc.v1.cri".image_decryption] table`},
		"own restrict":  {"version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  restrict_oom_score_adj = false\n", in, "sets restrict_oom_score_adj of"},
		"own table":     {"version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  snapshotter = \"overlayfs\"\n", Install{Coffer: coffer, KeysPath: keys, CRI: true, PerImage: true}, `has its own [plugins."io.containerd.grpc.v1.cri".containerd] table`},
		"remote mirror": {"version = 2\n", Install{Coffer: coffer, KeysPath: keys, CRI: true, Mirrors: []string{"registry.example:5000"}}, "not on a loopback address"},
		"bad mirror":    {"version = 2\n", Install{Coffer: coffer, KeysPath: keys, CRI: true, Mirrors: []string{"127.0.0.1:5000\"]\nx = [\""}}, "want HOST:PORT"},
	} {
		p := filepath.Join(t.TempDir(), "config.toml")
		os.WriteFile(p, []byte(tc.cfg), 0o644)
		_, err := InstallContainerd(p, tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, tc.want)
		}
		if got, _ := os.ReadFile(p); string(got) != tc.cfg {
			t.Errorf("%s: the refused install changed the file", name)
		}
	}
}
