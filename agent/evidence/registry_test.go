package evidence

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/spec"
)

// A new TEE is one Register line: ForTee finds it, unknown names list it,
// and a TEE known without an attester says so instead of attesting.
func TestTableAddsATEE(t *testing.T) {
	if _, ok := lookup("example-tee"); !ok { // (-count > 1 runs this again)
		Register(TEE{Name: "example-tee", New: func(options, string) (Attester, error) { return Sample{}, nil }})
	}
	a, err := ForTee("example-tee")
	if err != nil || a.Tee() != "sample" {
		t.Fatalf("ForTee(example-tee) = %v, %v", a, err)
	}
	if _, err := ForTee("no-such-tee"); !errors.Is(err, spec.ErrUnsupported) || !strings.Contains(err.Error(), "tdx, snp") || !strings.Contains(err.Error(), "example-tee") {
		t.Fatalf("unknown tee: %v, want the table's names", err)
	}
	sgx, err := ForTee("sgx")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sgx.Evidence(context.Background(), nil); !errors.Is(err, spec.ErrUnsupported) {
		t.Fatalf("sgx evidence: %v, want ErrUnsupported (no attester yet)", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("registering a TEE twice did not panic")
		}
	}()
	Register(TEE{Name: "example-tee"})
}

// Detect probes in CoCo's order: the TPM last (it is no TEE).
func TestProbeOrder(t *testing.T) {
	var names []string
	for _, e := range table {
		if len(e.Probes) > 0 {
			names = append(names, string(e.Name))
		}
	}
	if got := strings.Join(names, ","); !strings.HasPrefix(got, "tdx,snp,") || !strings.HasSuffix(got, ",tpm") {
		t.Fatalf("probe order %s, want tdx, snp first and tpm last", got)
	}
}
