package cli

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	old := Version
	defer func() { Version, Commit = old, "" }()
	Version, Commit = "v1.2.3", "abc123"
	out, err := runCoffer(t, "", "version")
	if err != nil || strings.TrimSpace(out) != "coffer v1.2.3 (commit abc123) "+runtime.Version() {
		t.Fatalf("coffer version = %q, %v", out, err)
	}
	Version, Commit = "", ""
	if s := versionString(); !strings.HasPrefix(s, "coffer ") || !strings.Contains(s, "(commit ") {
		t.Fatalf("unstamped version %q", s)
	}
}

func TestFormatVersionFromBuildInfo(t *testing.T) {
	gov := runtime.Version()
	vcs := func(kv ...string) []debug.BuildSetting {
		var s []debug.BuildSetting
		for i := 0; i < len(kv); i += 2 {
			s = append(s, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return s
	}
	for _, tc := range []struct {
		name, v, rev string
		bi           *debug.BuildInfo
		want         string
	}{
		{"ldflags win", "v9", "deadbeef", &debug.BuildInfo{Main: debug.Module{Version: "v1.0.0"}}, "coffer v9 (commit deadbeef) " + gov},
		{"go install tag", "", "", &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}, "coffer v1.2.3 " + gov},
		{"go install pseudo", "", "", &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261207015033-e5be0ba83651"}},
			"coffer v0.0.0-20261207015033-e5be0ba83651 (commit e5be0ba83651) " + gov},
		{"go build in clone", "", "", &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261207015033-e5be0ba83651+dirty"},
			Settings: vcs("vcs.revision", "e5be0ba8365130dd679310b6c9e861b9b08aed48", "vcs.time", "2026-12-07T01:50:33Z", "vcs.modified", "true")},
			"coffer v0.0.0-20261207015033-e5be0ba83651+dirty (commit e5be0ba8365130dd679310b6c9e861b9b08aed48+dirty, 2026-12-07T01:50:33Z) " + gov},
		{"no stamps", "", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}},
			"coffer (devel) (commit unknown (build with make build, or go build in a git clone)) " + gov},
		{"not a pseudo", "", "", &debug.BuildInfo{Main: debug.Module{Version: "v1.0.0-rc-abcdefabcdef"}}, "coffer v1.0.0-rc-abcdefabcdef " + gov},
	} {
		if got := formatVersion(tc.v, tc.rev, tc.bi); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}
