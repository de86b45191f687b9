package protocol_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The agent links kbs/protocol into the guest: keep it to the standard
// library, go-jose and coffer's ground floor (spec, jcs, resource; and
// keywrap/mlkem, the ML-KEM JWE, which needs nothing else).
func TestProtocolDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v (the dependency guard must run, not skip)", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		switch {
		case dep == "github.com/coffer-dev/coffer/kbs/protocol", dep == "github.com/coffer-dev/coffer/spec",
			dep == "github.com/coffer-dev/coffer/jcs", dep == "github.com/coffer-dev/coffer/resource",
			dep == "github.com/coffer-dev/coffer/keywrap/mlkem", dep == "github.com/coffer-dev/coffer/internal/bounded",
			strings.HasPrefix(dep, "github.com/go-jose/go-jose/v4"):
		default:
			t.Errorf("kbs/protocol depends on %s", dep)
		}
	}
}
