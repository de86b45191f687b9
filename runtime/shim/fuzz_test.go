package shim

import (
	"strings"
	"testing"

	runtimeoptions "github.com/containerd/containerd/pkg/runtimeoptions/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
)

// FuzzParseSpec feeds the bundle's config.json parser (the OCI process and
// annotations the shim reads) and an exec's process spec hostile JSON:
// they must return, within the per-input bound, a spec within the size
// limits or an error.
func FuzzParseSpec(f *testing.F) {
	f.Add([]byte(`{"process":{"args":["/bin/busybox","sh"],"env":["PATH=/bin"],"cwd":"/"},"annotations":{"io.kubernetes.cri.container-type":"sandbox"}}`))
	f.Add([]byte(`{"process":{"terminal":true}}`))
	f.Add([]byte(`{"annotations":{"` + strings.Repeat("a", 100) + `":"b"}}`))
	f.Add([]byte(`[[[[[[[[[[`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		if s, err := parseSpec(raw); err == nil && s.Process != nil {
			if len(s.Process.Args)+len(s.Process.Env) > maxArgs || s.Process.Terminal {
				t.Fatalf("accepted a process beyond the bounds: %d args+env, terminal %v", len(s.Process.Args)+len(s.Process.Env), s.Process.Terminal)
			}
		}
		if p, err := parseProcess(raw); err == nil && len(p.Args)+len(p.Env) > maxArgs {
			t.Fatalf("accepted an exec process of %d args+env", len(p.Args)+len(p.Env))
		}
	})
}

// FuzzConfig feeds the shim's configuration and runtime-options parsers.
func FuzzConfig(f *testing.F) {
	f.Add([]byte("kbs = \"http://127.0.0.1:8080\"\nkernel_dir = \"/k\"\nstate_dir = \"/s\"\nboot_timeout = \"1m\"\n"))
	f.Add([]byte("kbs = 1\n"))
	f.Add([]byte("unknown = \"x\"\n"))
	opt, _ := proto.Marshal(&runtimeoptions.Options{ConfigPath: "/etc/coffer/shim.toml"})
	f.Add(opt)
	f.Fuzz(func(t *testing.T, raw []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		if c, err := ParseConfig(raw); err == nil && (c.KBS == "" || c.KernelDir == "" || c.StateDir == "" || c.BootTimeout.Duration <= 0) {
			t.Fatalf("accepted an incomplete configuration: %+v", c)
		}
		_, _ = optionsConfigPath(&anypb.Any{TypeUrl: "runtimeoptions.v1.Options", Value: raw})
	})
}

// TestParseSpecBounds checks the refusals the fuzz targets rely on.
func TestParseSpecBounds(t *testing.T) {
	many := `{"process":{"args":[` + strings.Repeat(`"a",`, maxArgs) + `"a"]}}`
	for _, tc := range []struct{ name, raw, want string }{
		{"terminal", `{"process":{"terminal":true}}`, "terminal"},
		{"too many args", many, "args and env"},
		{"not JSON", `{`, "OCI spec"},
		{"too large", `{"x":"` + strings.Repeat("a", maxSpec) + `"}`, "larger than"},
	} {
		if _, err := parseSpec([]byte(tc.raw)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %q", tc.name, err, tc.want)
		}
	}
	if _, err := ParseConfig([]byte("kbs = \"x\"\nkernel_dir = \"/k\"\nstate_dir = \"/s\"\nbogus = 1\n")); err == nil || !strings.Contains(err.Error(), `unknown key "bogus"`) {
		t.Errorf("unknown key: %v", err)
	}
	if _, err := ParseConfig([]byte("kbs = \"x\"\n")); err == nil || !strings.Contains(err.Error(), "needs kbs, kernel_dir and state_dir") {
		t.Errorf("incomplete: %v", err)
	}
	opt, _ := proto.Marshal(&runtimeoptions.Options{ConfigPath: "/c.toml"})
	if p, err := optionsConfigPath(&anypb.Any{TypeUrl: "runtimeoptions.v1.Options", Value: opt}); err != nil || p != "/c.toml" {
		t.Errorf("runtime options: %q %v", p, err)
	}
	if p, err := optionsConfigPath(&anypb.Any{TypeUrl: "containerd.runc.v1.Options", Value: opt}); err != nil || p != "" {
		t.Errorf("another runtime's options: %q %v, want ignored", p, err)
	}
	if got := loopbackRegistry("127.0.0.1:5000/a/b:c"); got != "127.0.0.1:5000" {
		t.Errorf("loopbackRegistry: %q", got)
	}
	if got := loopbackRegistry("registry.example/a:b"); got != "" {
		t.Errorf("loopbackRegistry of a remote registry: %q", got)
	}
}
