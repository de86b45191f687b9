package nodecfg

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// TestInstallShim writes the guest-pull runtime into Debian's stock
// config and into an empty one: the result parses into the tables
// containerd reads (proxy plugin, runtime handler with its snapshotter,
// pod annotation and ConfigPath, runc kept when the file declares no
// runtime), a second install changes nothing, the settings read back, and
// --shim off removes the block and nothing else.
func TestInstallShim(t *testing.T) {
	t.Parallel()
	stock, err := os.ReadFile("testdata/debian-config.toml")
	if err != nil {
		t.Fatal(err)
	}
	coffer, keys := node(t)
	for _, tc := range []struct {
		name     string
		initial  []byte
		wantRunc bool
	}{{"debian", stock, true}, {"empty", nil, true},
		{"own runc", []byte("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n"), false}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "config.toml")
			if tc.initial != nil {
				os.WriteFile(cfg, tc.initial, 0o644)
			}
			in := Install{Coffer: coffer, KeysPath: keys, CRI: true, Shim: true, GuestPullDefault: true,
				SnapshotterSocket: "/run/coffer/sn.sock", ShimConfig: "/etc/coffer/s.toml"}
			if _, err := InstallContainerd(cfg, in); err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(cfg)
			type runtime struct {
				Type           string   `toml:"runtime_type"`
				Snapshotter    string   `toml:"snapshotter"`
				PodAnnotations []string `toml:"pod_annotations"`
				Options        struct {
					ConfigPath string `toml:"ConfigPath"`
				} `toml:"options"`
			}
			var parsed struct {
				Proxy map[string]struct {
					Type    string `toml:"type"`
					Address string `toml:"address"`
				} `toml:"proxy_plugins"`
				Plugins map[string]struct {
					Containerd struct {
						Snapshotter string             `toml:"snapshotter"`
						Runtimes    map[string]runtime `toml:"runtimes"`
					} `toml:"containerd"`
				} `toml:"plugins"`
			}
			if _, err := toml.Decode(string(got), &parsed); err != nil {
				t.Fatalf("installed config does not parse: %v\n%s", err, got)
			}
			if p := parsed.Proxy["coffer"]; p.Type != "snapshot" || p.Address != "/run/coffer/sn.sock" {
				t.Errorf("proxy plugin: %+v", p)
			}
			c := parsed.Plugins[CRIPlugin].Containerd
			r := c.Runtimes["coffer"]
			if r.Type != "io.containerd.coffer.v2" || r.Snapshotter != "coffer" || r.Options.ConfigPath != "/etc/coffer/s.toml" ||
				len(r.PodAnnotations) != 1 || r.PodAnnotations[0] != initDataAnnotation {
				t.Errorf("coffer runtime: %+v", r)
			}
			if c.Snapshotter != "coffer" {
				t.Errorf("CRI's default snapshotter %q, want coffer (--guest-pull-default)", c.Snapshotter)
			}
			if r := c.Runtimes["runc"]; r.Type != "io.containerd.runc.v2" {
				t.Errorf("runc runtime: %+v", r)
			}
			block := got[bytes.Index(got, []byte(shimBegin)):]
			if has := bytes.Contains(block, []byte("runtimes.runc]")); has != tc.wantRunc {
				t.Errorf("coffer's block declares runc: %v, want %v", has, tc.wantRunc)
			}
			if tc.name == "debian" {
				cut, _, _ := cutBlock(got, shimBegin, shimEnd)
				cut, _, _ = cutBlock(cut, criBegin, criEnd)
				if !bytes.HasPrefix(cut, stock) {
					t.Errorf("stock config not kept:\n%s", cut)
				}
			}
			back, found, err := Installed(cfg)
			if err != nil || !found || !back.Shim || back.SnapshotterSocket != in.SnapshotterSocket || back.ShimConfig != in.ShimConfig || !back.GuestPullDefault {
				t.Fatalf("read back: %+v %v %v", back, found, err)
			}
			if changed, err := InstallContainerd(cfg, back); err != nil || changed {
				t.Fatalf("second install: changed %v, %v", changed, err)
			}
			back.Shim, back.GuestPullDefault = false, false
			if _, err := InstallContainerd(cfg, back); err != nil {
				t.Fatal(err)
			}
			off, _ := os.ReadFile(cfg)
			if strings.Contains(string(off), "proxy_plugins") || strings.Contains(string(off), "coffer.v2") {
				t.Errorf("--shim off left the runtime:\n%s", off)
			}
		})
	}
	// A file that declares its own "coffer" runtime is refused by name.
	cfg := filepath.Join(t.TempDir(), "config.toml")
	os.WriteFile(cfg, []byte("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.coffer]\n  runtime_type = \"x\"\n"), 0o644)
	if _, err := InstallContainerd(cfg, Install{Coffer: coffer, KeysPath: keys, CRI: true, Shim: true}); err == nil || !strings.Contains(err.Error(), `runtime "coffer" of its own`) {
		t.Fatalf("own coffer runtime: %v", err)
	}
}
