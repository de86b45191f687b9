package cli

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// Every verb that takes a broker URL takes it as --kbs and as --url (one
// flag, two names), whichever of them it had before; `coffer wls` keeps
// --url for the workload service, which is not a broker.
func TestBrokerURLFlagBothNames(t *testing.T) {
	var walk func(c *cobra.Command)
	seen := 0
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		if strings.HasPrefix(c.CommandPath(), "coffer wls") {
			return
		}
		k, u := c.Flags().Lookup("kbs"), c.Flags().Lookup("url")
		if (k == nil) != (u == nil) {
			t.Errorf("%s: --kbs %v, --url %v: want both or neither", c.CommandPath(), k != nil, u != nil)
			return
		}
		if k == nil {
			return
		}
		seen++
		if err := u.Value.Set("https://kbs.example:8080"); err != nil || k.Value.String() != "https://kbs.example:8080" {
			t.Errorf("%s: --url does not set --kbs (%v)", c.CommandPath(), err)
		}
	}
	walk(NewRoot())
	if seen < 10 {
		t.Fatalf("only %d verbs take a broker URL", seen)
	}
}

// Both names work end to end, on a `coffer kbs` verb and on an image verb.
func TestBrokerURLAliases(t *testing.T) {
	t.Setenv(envTEE, "sample")
	t.Setenv(envKBSURL, "")
	b, kek := brokerWithKEK(t, "default/image_key/app")
	for _, name := range []string{"--kbs", "--url"} {
		out, stderr, err := runCofferSplit(t, nil, "kbs", "get-resource", name, b.URL, "--path", "default/image_key/app", "--tee", "sample")
		if err != nil || out != string(kek) {
			t.Errorf("kbs get-resource %s: %d bytes, %v (%s)", name, len(out), err, stderr)
		}
		if _, stderr, err := runCofferSplit(t, nil, "kbs", "list-resources", name, b.URL, "--admin-key", b.AdminKeyFile); err != nil {
			t.Errorf("kbs list-resources %s: %v (%s)", name, err, stderr)
		}
	}
}
