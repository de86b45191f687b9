package cli

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func findCmd(t *testing.T, path ...string) *cobra.Command {
	t.Helper()
	c, _, err := NewRoot().Find(path)
	if err != nil || c.Name() != path[len(path)-1] {
		t.Fatalf("no command %v: %v", path, err)
	}
	return c
}

// The help defects of issue 20: each verb lists the flags it uses, with
// readable value names, and the verbs named have long help.
func TestHelpFlagsPerVerb(t *testing.T) {
	for _, tc := range []struct {
		path    []string
		has     []string
		hasNot  []string
		needsLn bool
	}{
		{[]string{"kbs", "serve"}, []string{"config", "listen"}, []string{"url", "admin-key", "admin-token"}, true},
		{[]string{"kbs", "keygen-admin"}, nil, []string{"url", "admin-key", "admin-token"}, false},
		{[]string{"kbs", "migrate"}, nil, []string{"url", "admin-key", "admin-token"}, false},
		{[]string{"kbs", "set-resource"}, []string{"url", "admin-key", "admin-token"}, nil, false},
		{[]string{"kbs", "get-resource"}, []string{"url", "tee"}, []string{"admin-key", "admin-token"}, false},
		{[]string{"kbs", "admin-token"}, []string{"admin-key"}, []string{"url", "admin-token"}, false},
		{[]string{"inspect"}, nil, []string{"jobs"}, true},
		{[]string{"sign"}, nil, []string{"jobs"}, false},
		{[]string{"verify"}, nil, []string{"jobs", "require-signature"}, false},
		{[]string{"rekey"}, []string{"jobs", "progress"}, nil, true},
		{[]string{"pull"}, []string{"jobs", "progress", "require-signature"}, nil, false},
	} {
		c := findCmd(t, tc.path...)
		for _, f := range tc.has {
			if c.Flags().Lookup(f) == nil {
				t.Errorf("coffer %s has no --%s", strings.Join(tc.path, " "), f)
			}
		}
		for _, f := range tc.hasNot {
			if c.Flags().Lookup(f) != nil {
				t.Errorf("coffer %s lists --%s, which it does not use", strings.Join(tc.path, " "), f)
			}
		}
		if tc.needsLn && c.Long == "" {
			t.Errorf("coffer %s has no long help", strings.Join(tc.path, " "))
		}
	}
	out, _ := runCoffer(t, "", "kbs", "set-resource", "--help")
	if !strings.Contains(out, "--admin-token FILE") || strings.Contains(out, "admin-token coffer") {
		t.Errorf("--admin-token's value name:\n%s", out)
	}
	// One TEE rule for every attesting verb.
	want := findCmd(t, "pull").Flags().Lookup("tee").Usage
	for _, p := range [][]string{{"kbs", "get-resource"}, {"kbs", "attest"}, {"agent"}, {"keyprovider"}, {"verify"}} {
		if f := findCmd(t, p...).Flags().Lookup("tee"); f == nil || f.Usage != want {
			t.Errorf("coffer %s --tee: %v, want the same rule as pull (%q)", strings.Join(p, " "), f, want)
		}
	}
}
