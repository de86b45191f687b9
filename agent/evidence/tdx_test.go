package evidence

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/kbs/attest"
	"github.com/coffer-dev/coffer/spec"
)

// The TDX attester's evidence for a recorded quote verifies with the
// trustee-compatible verifier (kbs/attest) and the recorded collateral.
func TestTDXAttester(t *testing.T) {
	quote := readAttestTestdata(t, "tdx/trustee-tdx-quote-4.dat")
	rd := quote[48+520 : 48+584]
	a := &TDX{func(got [64]byte) ([]byte, error) {
		if !bytes.Equal(got[:], rd) {
			return nil, fmt.Errorf("asked for report data %x", got)
		}
		return quote, nil
	}}
	ev, err := a.Evidence(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	if err := json.Unmarshal(ev, &fields); err != nil || len(fields) != 2 || fields["cc_eventlog"] != nil {
		t.Fatalf("evidence: %s (%v)", ev, err)
	}
	cfg := attest.Config{
		Now:        func() time.Time { return time.Date(2023, 7, 1, 1, 0, 0, 0, time.UTC) },
		Collateral: attestTestdata,
		AllowDebug: true, // the recorded TD was launched with DEBUG
	}
	c, err := attest.NewTDX(cfg).Verify(context.Background(), attest.Evidence{Tee: "tdx", Primary: ev, ReportData: rd})
	if err != nil {
		t.Fatal(err)
	}
	if body := c["quote"].(map[string]any)["body"].(map[string]any); body["mr_td"] != "705ee9381b8633a9fbe532b52345e8433343d2868959f57889d84ca377c395b689cac1599ccea1b7d420483a9ce5f031" {
		t.Fatalf("claims: %v", c)
	}
	if _, err := a.Evidence(context.Background(), make([]byte, 65)); !errors.Is(err, spec.ErrUnsupported) {
		t.Fatalf("65 bytes of report data: got %v", err)
	}
}

func TestNewTDXWithoutDevice(t *testing.T) {
	for _, p := range []string{"/dev/tdx_guest", "/dev/tdx-guest", "/sys/kernel/config/tsm/report"} {
		if _, err := os.Stat(p); err == nil {
			t.Skipf("this machine has %s", p)
		}
	}
	if _, err := NewTDX(); !errors.Is(err, ErrNoTDX) || !errors.Is(err, spec.ErrUnsupported) {
		t.Fatalf("got %v, want %v", err, ErrNoTDX)
	}
}
