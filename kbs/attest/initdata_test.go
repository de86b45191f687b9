package attest

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/spec"
)

// The attack of issue 12 finding 1: init-data nested thousands deep cost the
// TOML parser seconds (16 KiB → 3.2 s, 64 KiB → 76 s) before any evidence
// was looked at. Each shape must now be refused without parsing, fast.
func TestInitDataNestingBomb(t *testing.T) {
	head := "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n"
	n := 16 << 10 // 64 KiB of nesting
	bombs := map[string]string{
		"inline tables": head + "x = " + strings.Repeat("{a=", n) + "1" + strings.Repeat("}", n) + "\n",
		"arrays":        head + "x = " + strings.Repeat("[", n) + strings.Repeat("]", n) + "\n",
		"dotted key":    head + strings.Repeat("a.", n) + "b = 1\n",
		"table header":  "[" + strings.Repeat("a.", n) + "b]\n",
		"oversized":     head + "x = \"" + strings.Repeat("y", MaxInitDataBytes) + "\"\n",
	}
	for name, body := range bombs {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			_, err := InitDataDigest(&protocol.InitData{Format: "toml", Body: body})
			took := time.Since(start)
			if !errors.Is(err, spec.ErrUnsupported) {
				t.Fatalf("InitDataDigest(%d-byte bomb) = %v, want ErrUnsupported", len(body), err)
			}
			if took > 100*time.Millisecond {
				t.Fatalf("refusing the bomb took %v, want < 100ms", took)
			}
		})
	}
}

// Nesting up to the bound, strings holding brackets and dots, comments and
// multi-line strings still parse and hash.
func TestInitDataShapeAccepts(t *testing.T) {
	deep := strings.Repeat("{a=", MaxInitDataDepth-1) + "1" + strings.Repeat("}", MaxInitDataDepth-1)
	docs := []string{
		"version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\nx = " + deep + "\n",
		"algorithm = \"sha512\" # [[[[ {{{{ ....\n[data]\n\"a.b.c\" = '[[[{{{'\n",
		"[data]\n\"policy.rego\" = '''\npackage policy\ndefault allow = [[[{{{ false\n'''\n",
		"[data]\ny = \"\"\"\nq \\\"\"\" ]]]] \"\"\"\"\nz = \"esc \\\\\" \n",
		"[data]\nf = 1.5\nt = 07:32:00.999999\n",
	}
	for _, body := range docs {
		if _, err := InitDataDigest(&protocol.InitData{Format: "toml", Body: body}); err != nil {
			t.Errorf("InitDataDigest(%q) = %v, want accepted", body, err)
		}
	}
}

// FuzzInitDataDigest: whatever the body, the answer comes fast, and the scan
// never refuses a document the parser would find shallow enough.
func FuzzInitDataDigest(f *testing.F) {
	f.Add("version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"policy.rego\" = \"x\"\n")
	f.Add("x = {a={b=[1,[2,{c=3}]]}}")
	f.Add("a.b.c = '''x'''\n[t.u]\ns=\"\\\"\"")
	f.Fuzz(func(t *testing.T, body string) {
		fuzzbound.Limit(t, fuzzbound.Default)
		_, err := InitDataDigest(&protocol.InitData{Format: "toml", Body: body})
		if err == nil || len(body) > 4096 {
			return
		}
		if checkTOMLShape(body, MaxInitDataDepth) != nil {
			// Refused by the scan: the parser must not have accepted it at a
			// shallow depth either (a scan false positive).
			var v map[string]any
			if _, perr := toml.Decode(body, &v); perr == nil && depthOf(v) < MaxInitDataDepth/2 && !strings.ContainsAny(body, "\"'#") {
				t.Fatalf("scan refused a %d-deep document: %q", depthOf(v), body)
			}
		}
	})
}

func depthOf(v any) int {
	d := 0
	switch x := v.(type) {
	case map[string]any:
		for _, e := range x {
			d = max(d, depthOf(e))
		}
		return d + 1
	case []any:
		for _, e := range x {
			d = max(d, depthOf(e))
		}
		return d + 1
	}
	return 0
}
