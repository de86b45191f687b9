package evidence

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/spec"
)

func TestSampleEvidence(t *testing.T) {
	ev, err := Sample{}.Evidence(context.Background(), []byte{1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(ev), `{"svn":"1","report_data":"AQID"}`; got != want {
		t.Errorf("evidence = %s, want %s", got, want)
	}
}

func TestForTee(t *testing.T) {
	for _, tc := range []struct {
		tee, want string
		err       error
	}{
		{"sample", "sample", nil},
		{"sgx", "sgx", nil},
		{"nosuch", "", spec.ErrUnsupported},
	} {
		a, err := ForTee(tc.tee)
		if !errors.Is(err, tc.err) || (err == nil && a.Tee() != tc.want) {
			t.Errorf("ForTee(%q) = %v, %v", tc.tee, a, err)
		}
	}
	a, _ := ForTee("sgx")
	if _, err := a.Evidence(context.Background(), nil); !errors.Is(err, spec.ErrUnsupported) {
		t.Errorf("unimplemented tee evidence: err = %v", err)
	}
	// This machine has no SNP or TDX device: asking for one is a clear error.
	for _, tee := range []string{"snp", "tdx"} {
		if _, err := ForTee(tee); !errors.Is(err, spec.ErrUnsupported) || !strings.Contains(err.Error(), "--tee sample") {
			t.Errorf("ForTee(%q) without the device: %v", tee, err)
		}
	}
	// Detection finds this machine's TEE, or says there is none; never sample.
	if d, err := Detect(); err != nil {
		if !errors.Is(err, ErrNoTEE) || !strings.Contains(err.Error(), "use --tee sample for development") {
			t.Errorf("Detect: %v", err)
		}
	} else if d.Tee() == "" || d.Tee() == "sample" {
		t.Errorf("Detect returned %q", d.Tee())
	}
}
