package nodecfg

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/agent/evidence"
	"github.com/coffer-dev/coffer/internal/testutil"
)

func TestUpdateKeepsEarlierOptions(t *testing.T) {
	t.Parallel()
	coffer, keys := node(t)
	cfg := filepath.Join(t.TempDir(), "config.toml")
	kp := filepath.Join(t.TempDir(), "kp.conf")
	first := Install{Coffer: coffer, KeysPath: keys, KeyProviderConfig: kp, Socket: "/run/other.sock"}
	if _, err := InstallContainerd(cfg, first); err != nil {
		t.Fatal(err)
	}
	got, found, err := Installed(cfg)
	if err != nil || !found {
		t.Fatalf("Installed: %v %v", found, err)
	}
	want, _ := first.withDefaults()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Installed = %+v, want %+v", got, want)
	}
	// The second run names one option: the others stay.
	changed, err := UpdateContainerd(cfg, func(in *Install) { in.PerNamespace = true })
	if err != nil || !changed {
		t.Fatalf("update: %v %v", changed, err)
	}
	got, _, _ = Installed(cfg)
	want.PerNamespace = true
	if !reflect.DeepEqual(got, want) {
		t.Errorf("after adding per-namespace keys: %+v, want %+v", got, want)
	}
	data, _ := os.ReadFile(cfg)
	if n := strings.Count(string(data), "OCICRYPT_KEYPROVIDER_CONFIG="+kp); n != len(Processors) {
		t.Errorf("keyprovider env on %d processors, want %d:\n%s", n, len(Processors), data)
	}
	// Removing an option is explicit; the same edit again changes nothing.
	if _, err := UpdateContainerd(cfg, func(in *Install) { in.KeyProviderConfig = "" }); err != nil {
		t.Fatal(err)
	}
	if got, _, _ = Installed(cfg); got.KeyProviderConfig != "" || !got.PerNamespace {
		t.Errorf("after removing the keyprovider: %+v", got)
	}
	if changed, err := UpdateContainerd(cfg, func(in *Install) { in.KeyProviderConfig = "" }); err != nil || changed {
		t.Errorf("repeat: changed %v, %v", changed, err)
	}
	// No block yet: Installed says so, update behaves as install.
	empty := filepath.Join(t.TempDir(), "config.toml")
	if _, found, err := Installed(empty); found || err != nil {
		t.Errorf("Installed of a missing file: %v %v", found, err)
	}
	if _, err := UpdateContainerd(empty, func(in *Install) { *in = Install{Coffer: coffer, KeysPath: keys} }); err != nil {
		t.Fatal(err)
	}
	if got, found, _ := Installed(empty); !found || got.KeysPath != keys {
		t.Errorf("first update: %+v %v", got, found)
	}
}

// TestCheckRunsTheProviderAsTheDecoderWill runs the documented keyprovider
// config (the real coffer binary, `coffer keyprovider --kbs URL`) through
// check: on a node without a TEE it fails with coffer's reason; with the
// stanza's env choosing the sample TEE the provider starts and answers the
// probe, so check passes.
func TestCheckRunsTheProviderAsTheDecoderWill(t *testing.T) {
	bin := testutil.BuildCoffer(t)
	_, keys := node(t)
	dir := t.TempDir()
	kp := filepath.Join(dir, "ocicrypt_keyprovider.conf")
	os.WriteFile(kp, []byte(`{"key-providers":{"attestation-agent":{"cmd":{"path":"`+bin+`","args":["keyprovider","--kbs","http://127.0.0.1:1"]}}}}`), 0o644)
	t.Setenv("COFFER_TEE", "") // as containerd's service environment: no TEE chosen
	stanza := func(env ...string) string {
		s, err := Install{Coffer: bin, KeysPath: keys, KeyProviderConfig: kp}.Stanza()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range env {
			s = strings.ReplaceAll(s, `"OCICRYPT_KEYPROVIDER_CONFIG=`+kp+`"`, `"OCICRYPT_KEYPROVIDER_CONFIG=`+kp+`", "`+e+`"`)
		}
		return "version = 2\n" + s
	}
	check := func(cfg string) []string {
		p := filepath.Join(t.TempDir(), "config.toml")
		os.WriteFile(p, []byte(cfg), 0o644)
		got, err := Check(context.Background(), WithContainerdConfig(p))
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if _, err := evidence.Detect(); err == nil {
		t.Log("this node has a TEE: the no-TEE case is not observable here")
	} else {
		got := check(stanza())
		if len(got) != 1 || !strings.Contains(got[0], `key provider "attestation-agent"`) || !strings.Contains(got[0], "no TEE found") {
			t.Errorf("no TEE: got %q, want one problem with coffer's no-TEE reason", got)
		}
	}
	if got := check(stanza("COFFER_TEE=sample")); len(got) != 0 {
		t.Errorf("sample TEE in the stanza's env: got %q, want no problem", got)
	}
	// A decoder whose binary does not take the stanza's arguments.
	bad := strings.ReplaceAll(stanza("COFFER_TEE=sample"), `"ctd-decoder", `, `"ctd-decoder", "--no-such-decoder-flag", `)
	if got := check(bad); len(got) != 1 || !strings.Contains(got[0], "does not accept its configured arguments") || !strings.Contains(got[0], "no-such-decoder-flag") {
		t.Errorf("decoder with a flag it does not know: got %q", got)
	}
	// A provider that cannot start (unknown flag) fails with its reason.
	os.WriteFile(kp, []byte(`{"key-providers":{"attestation-agent":{"cmd":{"path":"`+bin+`","args":["keyprovider","--no-such-flag"]}}}}`), 0o644)
	if got := check(stanza("COFFER_TEE=sample")); len(got) != 1 || !strings.Contains(got[0], "no-such-flag") {
		t.Errorf("bad flag: got %q", got)
	}
}
