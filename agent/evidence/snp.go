package evidence

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/client"

	"github.com/coffer-dev/coffer/kbs/protocol"
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
// entries with the codec the verifier decodes (kbs/protocol).
// go-sev-guest's own platform-info entry (not part of the firmware's table)
// is left out.
func snpEvidence(report []byte, entries []abi.CertTableEntry) (json.RawMessage, error) {
	var certs []protocol.SNPCert
	for _, e := range entries {
		guid := e.GUID.String()
		if guid == abi.ExtraPlatformInfoGUID || guid == "00000000-0000-0000-0000-000000000000" {
			continue
		}
		name, ok := snpCertTypes[guid]
		if !ok {
			name = guid // serialized as {"OTHER": guid}
		}
		certs = append(certs, protocol.SNPCert{Type: name, DER: e.RawCert})
	}
	ev, err := protocol.SNPEvidence(report, certs)
	if err != nil {
		return nil, fmt.Errorf("snp: %w", err)
	}
	return ev, nil
}
