package evidence

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/uuid"

	"github.com/coffer-dev/coffer/kbs/attest"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/spec"
)

// Recorded evidence of kbs/attest/testdata (see the READMEs there).
const attestTestdata = "../../kbs/attest/testdata"

func readAttestTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(attestTestdata, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fakeSNPFirmware answers like configfs-tsm or /dev/sev-guest: a report
// followed by the certificate table (with go-sev-guest's platform entry).
type fakeSNPFirmware struct {
	report []byte
	certs  []abi.CertTableEntry
	wantRD []byte
}

func (f fakeSNPFirmware) IsSupported() bool { return true }

func (f fakeSNPFirmware) Product() *spb.SevProduct { return nil }

func (f fakeSNPFirmware) GetRawQuoteAtLevel(rd [64]byte, vmpl uint) ([]byte, error) {
	if vmpl != 0 || !bytes.Equal(rd[:], f.wantRD) {
		return nil, fmt.Errorf("fake firmware: asked for VMPL %d, report data %x", vmpl, rd)
	}
	table := abi.CertTable{Entries: f.certs}
	if len(f.certs) > 0 {
		table.Entries = append(table.Entries, abi.CertTableEntry{GUID: uuid.MustParse(abi.ExtraPlatformInfoGUID), RawCert: []byte{1, 2, 3}})
	}
	return append(append([]byte(nil), f.report...), table.Marshal()...), nil
}

// The SNP attester's evidence for the report of trustee's end-to-end test
// is the JSON guest-components sent for it, and trustee-compatible
// verification (kbs/attest) accepts it.
func TestSNPAttesterMatchesGuestComponents(t *testing.T) {
	recorded := readAttestTestdata(t, "snp/trustee-e2e-evidence.json")
	var ev struct {
		Report    protocol.SNPReportJSON `json:"attestation_report"`
		CertChain []struct {
			Data []int `json:"data"`
		} `json:"cert_chain"`
	}
	if err := json.Unmarshal(recorded, &ev); err != nil {
		t.Fatal(err)
	}
	report, err := ev.Report.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	vcek := make([]byte, len(ev.CertChain[0].Data))
	for i, v := range ev.CertChain[0].Data {
		vcek[i] = byte(v)
	}
	rd := report[0x50:0x90]
	a := &SNP{fakeSNPFirmware{report, []abi.CertTableEntry{{GUID: uuid.MustParse(abi.VcekGUID), RawCert: vcek}}, rd}}
	got, err := a.Evidence(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	var gotJSON, wantJSON map[string]any
	if err := json.Unmarshal(got, &gotJSON); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(recorded, &wantJSON); err != nil {
		t.Fatal(err)
	}
	r := gotJSON["attestation_report"].(map[string]any)
	for _, k := range []string{"launch_mit_vector", "current_mit_vector"} { // absent in the older sev crate
		if v, ok := r[k]; !ok || v != nil {
			t.Fatalf("%s: got %v, want null", k, v)
		}
		delete(r, k)
	}
	if !reflect.DeepEqual(gotJSON, wantJSON) {
		t.Fatalf("attester evidence differs from guest-components':\n got %s\nwant %s", got, recorded)
	}
	c, err := attest.NewSNP(attest.Config{Now: func() time.Time { return time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC) }}).
		Verify(context.Background(), attest.Evidence{Tee: "snp", Primary: got, ReportData: rd})
	if err != nil {
		t.Fatal(err)
	}
	if c["measurement"] != "6a6519d757e68c2e939c9dbbbc1828498e8de35d2766dd05f1a2cca5059d0cf4ae62a36d75c837974dd50b315506e73e" {
		t.Fatalf("claims: %v", c)
	}
}

// The attester's JSON decodes, as the verifier decodes it, back to the
// very report bytes for every recorded report, and a report without a
// certificate table gives "cert_chain": null.
func TestSNPAttesterRoundTripsThroughVerifierCodec(t *testing.T) {
	for _, name := range []string{"snp/trustee-test-report.bin", "snp/trustee-test-vlek-report.bin", "snp/gosevguest-attestation.bin"} {
		report := readAttestTestdata(t, name)
		rd := make([]byte, 64)
		got, err := (&SNP{fakeSNPFirmware{report: report, wantRD: rd}}).Evidence(context.Background(), nil)
		if err != nil {
			t.Fatal(name, err)
		}
		var ev protocol.SNPEvidenceJSON
		if err := json.Unmarshal(got, &ev); err != nil || ev.Report == nil {
			t.Fatalf("%s: %v", name, err)
		}
		back, err := ev.Report.Bytes()
		if err != nil {
			t.Fatal(name, err)
		}
		if !bytes.Equal(back, report) {
			t.Fatalf("%s: the report does not survive the evidence JSON", name)
		}
		if !bytes.Contains(got, []byte(`"cert_chain":null`)) {
			t.Fatalf("%s: %s", name, got)
		}
	}
}

func TestSNPAttesterRefuses(t *testing.T) {
	a := &SNP{fakeSNPFirmware{report: make([]byte, 100)}}
	if _, err := a.Evidence(context.Background(), make([]byte, 65)); !errors.Is(err, spec.ErrUnsupported) {
		t.Fatalf("65 bytes of report data: got %v", err)
	}
	if _, err := a.Evidence(context.Background(), nil); err == nil {
		t.Fatal("a short report was accepted")
	}
}

func TestNewSNPWithoutDevice(t *testing.T) {
	if _, err := os.Stat("/dev/sev-guest"); err == nil {
		t.Skip("this machine has /dev/sev-guest")
	}
	if _, err := os.Stat("/sys/kernel/config/tsm/report"); err == nil {
		t.Skip("this machine has configfs-tsm")
	}
	if _, err := NewSNP(); !errors.Is(err, ErrNoSNP) || !errors.Is(err, spec.ErrUnsupported) {
		t.Fatalf("got %v, want %v", err, ErrNoSNP)
	}
}
