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

// Leaf packages must not drag in heavy dependencies their users do not need:
// the attestation-agent wrapper is linked into image tools (no gRPC), the
// admin client into owner tooling (no OPA, no gRPC), the broker's wire
// vocabulary into guests (no OPA, no gRPC, no TPM or TEE libraries).
func TestLeafDependencies(t *testing.T) {
	forbidden := map[string][]string{
		"./keywrap/aa":      {"google.golang.org/grpc", "github.com/open-policy-agent/opa"},
		"./keywrap/mlkem":   {"google.golang.org/grpc", "github.com/open-policy-agent/opa", "github.com/ProtonMail/go-crypto"},
		"./kbs/adminclient": {"google.golang.org/grpc", "github.com/open-policy-agent/opa", "github.com/jackc/pgx"},
		"./cmd/coffer":      {"k8s.io/api", "k8s.io/apimachinery", "sigs.k8s.io/"}, // the manifest test's dependencies are test-only (k8s.io/klog, a logger, comes with sigstore-go)
		"./kbs/protocol":    {"google.golang.org/grpc", "github.com/open-policy-agent/opa", "github.com/google/go-tpm", "github.com/google/go-sev-guest"},
		"./imagecrypt":      {"github.com/open-policy-agent/opa", "github.com/google/go-tpm"},
		"./agent/evidence":  {"github.com/open-policy-agent/opa"},
		// Linked into the vm guest (scratch disk) beside the ttrpc agent.
		"./agent/securemount": {"google.golang.org/grpc", "github.com/open-policy-agent/opa", "github.com/google/go-tpm", "github.com/coffer-dev/coffer/agent/client"},
		"./filecrypt":         {"google.golang.org/grpc", "github.com/open-policy-agent/opa", "github.com/google/go-tpm"},
		"./secl/flavor":       {"google.golang.org/grpc", "github.com/open-policy-agent/opa", "github.com/google/go-tpm", "github.com/tink-crypto"},
		// Stores register themselves (store.Register); the broker opens them by URL.
		"./kbs/server": {"github.com/coffer-dev/coffer/kbs/store/postgres", "github.com/jackc/pgx"},
	}
	for pkg, bad := range forbidden {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, b := range bad {
				if strings.HasPrefix(dep, b) {
					t.Errorf("%s depends on %s (via %s)", pkg, b, dep)
					break
				}
			}
		}
	}
}

// Shared vocabularies sit on the ground floor: canonical JSON (jcs) and the
// resource/key-id grammar (resource) import only spec, and the packages that
// speak them (image policies, signed flavors, key wrappers) import nothing of
// the broker's role packages under kbs/; the SecL host (wla) shares the
// flavor vocabulary (secl/flavor: key URLs, the isecl annotation) with the
// owner's tool, not the tool itself.
func TestGroundFloor(t *testing.T) {
	rules := map[string]string{
		"./jcs":         "github.com/coffer-dev/coffer/kbs",
		"./resource":    "github.com/coffer-dev/coffer/kbs",
		"./imagepolicy": "github.com/coffer-dev/coffer/kbs/",
		"./secl/flavor": "github.com/coffer-dev/coffer/kbs/",
		"./keywrap/...": "github.com/coffer-dev/coffer/kbs/",
		"./secl/wla":    "github.com/coffer-dev/coffer/secl/wpm",  // the host does not link the owner's tool
		"./secl/wla ":   "github.com/coffer-dev/coffer/secl/wls$", // nor the service: its client is wlsclient
	}
	for pkg, bad := range rules {
		pkg = strings.TrimSpace(pkg)
		out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		exact, isExact := strings.CutSuffix(bad, "$")
		for _, dep := range strings.Fields(string(out)) {
			if (isExact && dep == exact) || (!isExact && strings.HasPrefix(dep, bad)) {
				t.Errorf("%s depends on %s", pkg, dep)
			}
		}
	}
}
