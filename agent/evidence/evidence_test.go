package evidence

import (
	"context"
	"errors"
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
		{"snp", "snp", nil},
		{"nosuch", "", spec.ErrUnsupported},
	} {
		a, err := ForTee(tc.tee)
		if !errors.Is(err, tc.err) || (err == nil && a.Tee() != tc.want) {
			t.Errorf("ForTee(%q) = %v, %v", tc.tee, a, err)
		}
	}
	a, _ := ForTee("tdx")
	if _, err := a.Evidence(context.Background(), nil); !errors.Is(err, spec.ErrUnsupported) {
		t.Errorf("unimplemented tee evidence: err = %v", err)
	}
	if d := Detect(); d.Tee() == "" {
		t.Error("Detect returned an attester without a tee")
	}
}
