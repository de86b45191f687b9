package evidence

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/client"

	"github.com/coffer-dev/coffer/spec"
)

// ErrNoSNP is what NewSNP returns on a machine that is not an SNP guest.
var ErrNoSNP = fmt.Errorf("no SNP device (/dev/sev-guest, configfs-tsm): not an SNP guest; use --tee sample for development: %w", spec.ErrUnsupported)

// SNP is the AMD SEV-SNP attester. Its evidence is what guest-components'
// snp attester sends and trustee's snp verifier reads:
//
//	{"attestation_report": {<the sev crate's serde form of the report>},
//	 "cert_chain": [{"cert_type": "VCEK"|"VLEK"|"ASK"|"ARK"|"CRL"|{"OTHER": "<guid>"},
//	                 "data": [DER bytes as numbers]}, …] | null}
//
// The report is requested at VMPL 0 with the report data zero-padded to 64
// bytes; cert_chain is the certificate table of the extended report when
// the host provides one (null otherwise: the verifier then needs the VCEK
// from its collateral or AMD's KDS).
type SNP struct{ qp client.LeveledQuoteProvider }

// NewSNP returns the SNP attester of this guest, using configfs-tsm or
// /dev/sev-guest (go-sev-guest's client), or ErrNoSNP.
func NewSNP() (Attester, error) {
	qp, err := client.GetLeveledQuoteProvider()
	if err != nil {
		return nil, ErrNoSNP
	}
	return &SNP{qp}, nil
}

// Tee implements Attester.
func (*SNP) Tee() string { return "snp" }

// Evidence implements Attester.
func (a *SNP) Evidence(_ context.Context, reportData []byte) (json.RawMessage, error) {
	if len(reportData) > 64 {
		return nil, fmt.Errorf("snp: report data of %d bytes, at most 64: %w", len(reportData), spec.ErrUnsupported)
	}
	var rd [64]byte
	copy(rd[:], reportData)
	raw, err := a.qp.GetRawQuoteAtLevel(rd, 0)
	if err != nil {
		return nil, fmt.Errorf("snp: getting the attestation report: %w", err)
	}
	if len(raw) < abi.ReportSize {
		return nil, fmt.Errorf("snp: the firmware returned %d bytes, less than a report", len(raw))
	}
	var table abi.CertTable
	if len(raw) > abi.ReportSize {
		if err := table.Unmarshal(raw[abi.ReportSize:]); err != nil {
			return nil, fmt.Errorf("snp: certificate table: %w", err)
		}
	}
	return snpEvidence(raw[:abi.ReportSize], table.Entries)
}

// snpCertTypes names the certificate table GUIDs as the sev crate's CertType.
var snpCertTypes = map[string]string{
	abi.ArkGUID:                            "ARK",
	abi.AskGUID:                            "ASK",
	abi.VcekGUID:                           "VCEK",
	abi.VlekGUID:                           "VLEK",
	"92f81bc3-5811-4d3d-97ff-d19f88dc67ea": "CRL",
}

// snpEvidence builds the evidence JSON from a report and certificate table
// entries. go-sev-guest's own platform-info entry (not part of the
// firmware's table) is left out.
func snpEvidence(report []byte, entries []abi.CertTableEntry) (json.RawMessage, error) {
	r, err := snpReportJSON(report)
	if err != nil {
		return nil, err
	}
	type entry struct {
		CertType any       `json:"cert_type"`
		Data     byteArray `json:"data"`
	}
	var chain []entry
	for _, e := range entries {
		guid := e.GUID.String()
		if guid == abi.ExtraPlatformInfoGUID || guid == "00000000-0000-0000-0000-000000000000" {
			continue
		}
		var t any = map[string]string{"OTHER": guid}
		if name, ok := snpCertTypes[guid]; ok {
			t = name
		}
		chain = append(chain, entry{t, e.RawCert})
	}
	return json.Marshal(struct {
		Report any     `json:"attestation_report"`
		Chain  []entry `json:"cert_chain"`
	}{r, chain})
}

// snpReportJSON decodes an ATTESTATION_REPORT as the sev crate's
// AttestationReport::from_bytes does, into its serde form (field order and
// names kept): TCB fields by processor generation, CPUID fields from version
// 3, mitigation vectors from version 5, null where absent.
func snpReportJSON(b []byte) (any, error) {
	if len(b) != abi.ReportSize {
		return nil, fmt.Errorf("snp: report of %d bytes, want %d", len(b), abi.ReportSize)
	}
	le := binary.LittleEndian
	version := le.Uint32(b)
	turin := false
	switch {
	case version < 2:
		return nil, fmt.Errorf("snp: report version %d", version)
	case version == 2:
		chip := b[0x1A0:0x1E0]
		if isZero(chip) {
			return nil, errors.New("snp: version 2 report with a masked chip id: processor generation unknown")
		}
		turin = isZero(chip[8:])
	default:
		family, model := b[0x188], b[0x189]
		switch {
		case family == 0x19 && (model <= 0x0F || model >= 0x10 && model <= 0x1F || model >= 0xA0 && model <= 0xAF):
		case family == 0x1A && model <= 0x11:
			turin = true
		default:
			return nil, fmt.Errorf("snp: CPU family 0x%x model 0x%x is not Milan, Genoa or Turin", family, model)
		}
	}
	tcb := func(t []byte) orderedJSON {
		if turin {
			return orderedJSON{{"fmc", t[0]}, {"bootloader", t[1]}, {"tee", t[2]}, {"snp", t[3]}, {"microcode", t[7]}}
		}
		return orderedJSON{{"fmc", nil}, {"bootloader", t[0]}, {"tee", t[1]}, {"snp", t[6]}, {"microcode", t[7]}}
	}
	version3 := func(i int) any {
		if version >= 3 {
			return b[i]
		}
		return nil
	}
	version5 := func(i int) any {
		if version >= 5 {
			return le.Uint64(b[i:])
		}
		return nil
	}
	ver := func(i int) orderedJSON { return orderedJSON{{"major", b[i+2]}, {"minor", b[i+1]}, {"build", b[i]}} }
	return orderedJSON{
		{"version", version},
		{"guest_svn", le.Uint32(b[0x04:])},
		{"policy", le.Uint64(b[0x08:])},
		{"family_id", byteArray(b[0x10:0x20])},
		{"image_id", byteArray(b[0x20:0x30])},
		{"vmpl", le.Uint32(b[0x30:])},
		{"sig_algo", le.Uint32(b[0x34:])},
		{"current_tcb", tcb(b[0x38:0x40])},
		{"plat_info", le.Uint64(b[0x40:])},
		{"key_info", le.Uint32(b[0x48:])},
		{"report_data", byteArray(b[0x50:0x90])},
		{"measurement", byteArray(b[0x90:0xC0])},
		{"host_data", byteArray(b[0xC0:0xE0])},
		{"id_key_digest", byteArray(b[0xE0:0x110])},
		{"author_key_digest", byteArray(b[0x110:0x140])},
		{"report_id", byteArray(b[0x140:0x160])},
		{"report_id_ma", byteArray(b[0x160:0x180])},
		{"reported_tcb", tcb(b[0x180:0x188])},
		{"cpuid_fam_id", version3(0x188)},
		{"cpuid_mod_id", version3(0x189)},
		{"cpuid_step", version3(0x18A)},
		{"chip_id", byteArray(b[0x1A0:0x1E0])},
		{"committed_tcb", tcb(b[0x1E0:0x1E8])},
		{"current", ver(0x1E8)},
		{"committed", ver(0x1EC)},
		{"launch_tcb", tcb(b[0x1F0:0x1F8])},
		{"launch_mit_vector", version5(0x1F8)},
		{"current_mit_vector", version5(0x200)},
		{"signature", orderedJSON{{"r", byteArray(b[0x2A0:0x2E8])}, {"s", byteArray(b[0x2E8:0x330])}}},
	}, nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// orderedJSON is a JSON object whose members keep their order (serde
// serializes struct fields in declaration order).
type orderedJSON []struct {
	k string
	v any
}

func (o orderedJSON) MarshalJSON() ([]byte, error) {
	out := []byte{'{'}
	for i, m := range o {
		if i > 0 {
			out = append(out, ',')
		}
		out = strconv.AppendQuote(out, m.k)
		out = append(out, ':')
		v, err := json.Marshal(m.v)
		if err != nil {
			return nil, err
		}
		out = append(out, v...)
	}
	return append(out, '}'), nil
}

// byteArray marshals as a JSON array of numbers, as serde does byte arrays.
type byteArray []byte

func (b byteArray) MarshalJSON() ([]byte, error) {
	out := make([]byte, 0, 2+4*len(b))
	out = append(out, '[')
	for i, v := range b {
		if i > 0 {
			out = append(out, ',')
		}
		out = strconv.AppendUint(out, uint64(v), 10)
	}
	return append(out, ']'), nil
}
