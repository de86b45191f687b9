package cli

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/tpm"
	"github.com/coffer-dev/coffer/tpm/tpmtest"
)

func TestTPMAKPublic(t *testing.T) {
	if _, err := runCoffer(t, "", "tpm", "ak-public", "--tpm", "localhost:2321"); !errors.Is(err, ErrUsage) {
		t.Errorf("--tpm without tcp://: %v, want a usage error", err)
	}
	sw := tpmtest.StartSwtpm(t)
	out, err := runCoffer(t, "", "tpm", "ak-public", "--tpm", sw.Addr)
	if err != nil {
		t.Fatalf("tpm ak-public: %v %s", err, out)
	}
	tp, err := tpm.Open(t.Context(), sw.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	der, err := tp.AKPublic(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if want := base64.StdEncoding.EncodeToString(der) + "\n"; out != want {
		t.Errorf("output %q, want %q", out, want)
	}
	if strings.Count(out, "\n") != 1 {
		t.Errorf("output is not one line: %q", out)
	}
}
