package coffer_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The wire vocabulary and the layer cipher must stay stdlib-only (plus each
// other): anything else would drag dependencies into every consumer.
func TestStdlibOnlyPackages(t *testing.T) {
	allowed := map[string]bool{"github.com/coffer-dev/coffer/spec": true}
	for _, pkg := range []string{"./spec", "./layercrypt"} {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			if !allowed[dep] && dep != "github.com/coffer-dev/coffer/"+strings.TrimPrefix(pkg, "./") {
				t.Errorf("%s imports non-stdlib package %s", pkg, dep)
			}
		}
	}
}
