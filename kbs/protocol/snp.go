package protocol

// The SEV-SNP evidence codec: the sev crate's serde form of an
// ATTESTATION_REPORT and guest-components' snp evidence around it. The
// attester (agent/evidence) encodes it, the verifier (kbs/attest) decodes
// it: one codec, here, for both. Stdlib only.

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/coffer-dev/coffer/spec"
)

// SNPReportSize is the size of an SEV-SNP ATTESTATION_REPORT.
const SNPReportSize = 1184

// SNPGeneration maps CPUID family and model to a processor generation as
// trustee does (and as the sev crate's Generation::identify_cpu does).
func SNPGeneration(family, model byte) (string, error) {
	switch {
	case family == 0x19 && model <= 0x0F:
		return "Milan", nil
	case family == 0x19 && (model >= 0x10 && model <= 0x1F || model >= 0xA0 && model <= 0xAF):
		return "Genoa", nil
	case family == 0x1A && model <= 0x11:
		return "Turin", nil
	}
	return "", fmt.Errorf("snp report from CPU family 0x%x model 0x%x: not Milan, Genoa or Turin: %w", family, model, spec.ErrUnsupported)
}

// SNPTCB is a TCB_VERSION decoded for one processor generation.
type SNPTCB struct{ FMC, Bootloader, TEE, SNP, Microcode byte }

// DecodeSNPTCB decodes the 8 bytes of a TCB_VERSION in the layout of gen
// ("Turin" has an FMC field and another order).
func DecodeSNPTCB(b []byte, gen string) SNPTCB {
	if gen == "Turin" {
		return SNPTCB{FMC: b[0], Bootloader: b[1], TEE: b[2], SNP: b[3], Microcode: b[7]}
	}
	return SNPTCB{Bootloader: b[0], TEE: b[1], SNP: b[6], Microcode: b[7]}
}

func isZeroBytes(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// SNPReportJSON is the sev crate's serde form of an SEV-SNP
// ATTESTATION_REPORT, the "attestation_report" of trustee's snp evidence.
// Byte strings are JSON arrays of numbers; fields a report version lacks
// are null.
type SNPReportJSON struct {
	Version          uint32         `json:"version"`
	GuestSVN         uint32         `json:"guest_svn"`
	Policy           uint64         `json:"policy"`
	FamilyID         ByteList       `json:"family_id"`
	ImageID          ByteList       `json:"image_id"`
	VMPL             uint32         `json:"vmpl"`
	SigAlgo          uint32         `json:"sig_algo"`
	CurrentTCB       snpTCBJSON     `json:"current_tcb"`
	PlatInfo         uint64         `json:"plat_info"`
	KeyInfo          uint32         `json:"key_info"`
	ReportData       ByteList       `json:"report_data"`
	Measurement      ByteList       `json:"measurement"`
	HostData         ByteList       `json:"host_data"`
	IDKeyDigest      ByteList       `json:"id_key_digest"`
	AuthorKeyDigest  ByteList       `json:"author_key_digest"`
	ReportID         ByteList       `json:"report_id"`
	ReportIDMA       ByteList       `json:"report_id_ma"`
	ReportedTCB      snpTCBJSON     `json:"reported_tcb"`
	CPUIDFamID       *uint8         `json:"cpuid_fam_id"`
	CPUIDModID       *uint8         `json:"cpuid_mod_id"`
	CPUIDStep        *uint8         `json:"cpuid_step"`
	ChipID           ByteList       `json:"chip_id"`
	CommittedTCB     snpTCBJSON     `json:"committed_tcb"`
	Current          snpVersionJSON `json:"current"`
	Committed        snpVersionJSON `json:"committed"`
	LaunchTCB        snpTCBJSON     `json:"launch_tcb"`
	LaunchMitVector  *uint64        `json:"launch_mit_vector"`
	CurrentMitVector *uint64        `json:"current_mit_vector"`
	Signature        struct {
		R ByteList `json:"r"`
		S ByteList `json:"s"`
	} `json:"signature"`
}

type snpTCBJSON struct {
	FMC        *uint8 `json:"fmc"`
	Bootloader uint8  `json:"bootloader"`
	TEE        uint8  `json:"tee"`
	SNP        uint8  `json:"snp"`
	Microcode  uint8  `json:"microcode"`
}

type snpVersionJSON struct {
	Major uint8 `json:"major"`
	Minor uint8 `json:"minor"`
	Build uint8 `json:"build"`
}

// encodeGeneration is the processor generation the sev crate encodes a
// report's TCB fields for: from CPUID (version 3 and later) or, for
// version 2, "Turin" when only the first 8 bytes of CHIP_ID are set.
func encodeGeneration(version uint32, family, model *uint8, chip []byte) (string, error) {
	if version == 2 {
		if isZeroBytes(chip) {
			return "", errors.New("version 2 report with a masked CHIP_ID: processor generation unknown")
		}
		if isZeroBytes(chip[8:]) {
			return "Turin", nil
		}
		return "Genoa", nil
	}
	if family == nil || model == nil {
		return "", fmt.Errorf("version %d report without cpuid_fam_id and cpuid_mod_id", version)
	}
	gen, err := SNPGeneration(*family, *model)
	if err != nil {
		return "", errors.Unwrap(err)
	}
	return gen, nil
}

func (t snpTCBJSON) put(b []byte, gen string) {
	if gen == "Turin" {
		if t.FMC != nil {
			b[0] = *t.FMC
		}
		b[1], b[2], b[3], b[7] = t.Bootloader, t.TEE, t.SNP, t.Microcode
		return
	}
	b[0], b[1], b[6], b[7] = t.Bootloader, t.TEE, t.SNP, t.Microcode
}

func tcbJSON(b []byte, gen string) snpTCBJSON {
	t := DecodeSNPTCB(b, gen)
	j := snpTCBJSON{Bootloader: t.Bootloader, TEE: t.TEE, SNP: t.SNP, Microcode: t.Microcode}
	if gen == "Turin" {
		j.FMC = &t.FMC
	}
	return j
}

// Bytes encodes the report into its 1184 firmware bytes as the sev crate's
// Encoder does: reserved fields zero, TCB fields in the layout of the
// processor generation.
func (r *SNPReportJSON) Bytes() ([]byte, error) {
	for _, f := range []struct {
		name string
		b    ByteList
		n    int
	}{
		{"family_id", r.FamilyID, 16}, {"image_id", r.ImageID, 16}, {"report_data", r.ReportData, 64},
		{"measurement", r.Measurement, 48}, {"host_data", r.HostData, 32}, {"id_key_digest", r.IDKeyDigest, 48},
		{"author_key_digest", r.AuthorKeyDigest, 48}, {"report_id", r.ReportID, 32}, {"report_id_ma", r.ReportIDMA, 32},
		{"chip_id", r.ChipID, 64}, {"signature.r", r.Signature.R, 72}, {"signature.s", r.Signature.S, 72},
	} {
		if len(f.b) != f.n {
			return nil, fmt.Errorf("%s has %d bytes, want %d", f.name, len(f.b), f.n)
		}
	}
	if r.Version < 2 {
		return nil, fmt.Errorf("report version %d", r.Version)
	}
	gen, err := encodeGeneration(r.Version, r.CPUIDFamID, r.CPUIDModID, r.ChipID)
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	b := make([]byte, SNPReportSize)
	le.PutUint32(b[0x00:], r.Version)
	le.PutUint32(b[0x04:], r.GuestSVN)
	le.PutUint64(b[0x08:], r.Policy)
	copy(b[0x10:], r.FamilyID)
	copy(b[0x20:], r.ImageID)
	le.PutUint32(b[0x30:], r.VMPL)
	le.PutUint32(b[0x34:], r.SigAlgo)
	r.CurrentTCB.put(b[0x38:0x40], gen)
	le.PutUint64(b[0x40:], r.PlatInfo)
	le.PutUint32(b[0x48:], r.KeyInfo)
	copy(b[0x50:], r.ReportData)
	copy(b[0x90:], r.Measurement)
	copy(b[0xC0:], r.HostData)
	copy(b[0xE0:], r.IDKeyDigest)
	copy(b[0x110:], r.AuthorKeyDigest)
	copy(b[0x140:], r.ReportID)
	copy(b[0x160:], r.ReportIDMA)
	r.ReportedTCB.put(b[0x180:0x188], gen)
	if r.Version >= 3 {
		for i, p := range []*uint8{r.CPUIDFamID, r.CPUIDModID, r.CPUIDStep} {
			if p != nil {
				b[0x188+i] = *p
			}
		}
	}
	copy(b[0x1A0:], r.ChipID)
	r.CommittedTCB.put(b[0x1E0:0x1E8], gen)
	b[0x1E8], b[0x1E9], b[0x1EA] = r.Current.Build, r.Current.Minor, r.Current.Major
	b[0x1EC], b[0x1ED], b[0x1EE] = r.Committed.Build, r.Committed.Minor, r.Committed.Major
	r.LaunchTCB.put(b[0x1F0:0x1F8], gen)
	if r.Version >= 5 {
		if r.LaunchMitVector != nil {
			le.PutUint64(b[0x1F8:], *r.LaunchMitVector)
		}
		if r.CurrentMitVector != nil {
			le.PutUint64(b[0x200:], *r.CurrentMitVector)
		}
	}
	copy(b[0x2A0:], r.Signature.R)
	copy(b[0x2E8:], r.Signature.S)
	return b, nil
}

// SNPReportFromBytes decodes a report's firmware bytes into the sev
// crate's serde form, as guest-components' attester does with
// AttestationReport::from_bytes.
func SNPReportFromBytes(raw []byte) (*SNPReportJSON, error) {
	if len(raw) != SNPReportSize {
		return nil, fmt.Errorf("snp report of %d bytes, want %d: %w", len(raw), SNPReportSize, spec.ErrUnsupported)
	}
	le := binary.LittleEndian
	r := &SNPReportJSON{Version: le.Uint32(raw[0x00:])}
	if r.Version < 2 {
		return nil, fmt.Errorf("snp report version %d: %w", r.Version, spec.ErrUnsupported)
	}
	var fam, mod, step *uint8
	if r.Version >= 3 {
		f, m, s := raw[0x188], raw[0x189], raw[0x18A]
		fam, mod, step = &f, &m, &s
	}
	gen, err := encodeGeneration(r.Version, fam, mod, raw[0x1A0:0x1E0])
	if err != nil {
		return nil, fmt.Errorf("snp report: %v: %w", err, spec.ErrUnsupported)
	}
	clone := func(lo, hi int) ByteList { return append(ByteList(nil), raw[lo:hi]...) }
	r.GuestSVN = le.Uint32(raw[0x04:])
	r.Policy = le.Uint64(raw[0x08:])
	r.FamilyID, r.ImageID = clone(0x10, 0x20), clone(0x20, 0x30)
	r.VMPL, r.SigAlgo = le.Uint32(raw[0x30:]), le.Uint32(raw[0x34:])
	r.CurrentTCB = tcbJSON(raw[0x38:0x40], gen)
	r.PlatInfo, r.KeyInfo = le.Uint64(raw[0x40:]), le.Uint32(raw[0x48:])
	r.ReportData, r.Measurement, r.HostData = clone(0x50, 0x90), clone(0x90, 0xC0), clone(0xC0, 0xE0)
	r.IDKeyDigest, r.AuthorKeyDigest = clone(0xE0, 0x110), clone(0x110, 0x140)
	r.ReportID, r.ReportIDMA = clone(0x140, 0x160), clone(0x160, 0x180)
	r.ReportedTCB = tcbJSON(raw[0x180:0x188], gen)
	r.CPUIDFamID, r.CPUIDModID, r.CPUIDStep = fam, mod, step
	r.ChipID = clone(0x1A0, 0x1E0)
	r.CommittedTCB = tcbJSON(raw[0x1E0:0x1E8], gen)
	r.Current = snpVersionJSON{Build: raw[0x1E8], Minor: raw[0x1E9], Major: raw[0x1EA]}
	r.Committed = snpVersionJSON{Build: raw[0x1EC], Minor: raw[0x1ED], Major: raw[0x1EE]}
	r.LaunchTCB = tcbJSON(raw[0x1F0:0x1F8], gen)
	if r.Version >= 5 {
		l, c := le.Uint64(raw[0x1F8:]), le.Uint64(raw[0x200:])
		r.LaunchMitVector, r.CurrentMitVector = &l, &c
	}
	r.Signature.R, r.Signature.S = clone(0x2A0, 0x2E8), clone(0x2E8, 0x330)
	return r, nil
}

// SNPCert is one entry of an SNP evidence's cert_chain: a certificate
// table entry of the extended report.
type SNPCert struct {
	// Type is "ARK", "ASK", "VCEK", "VLEK", "CRL", or a GUID for any other
	// entry (serialized as {"OTHER": "<guid>"}).
	Type string
	DER  []byte
}

// SNPEvidence builds trustee's snp evidence from a report's firmware bytes
// and the certificate table of the extended report (may be empty: then
// "cert_chain" is null, as guest-components sends it without certificates).
func SNPEvidence(report []byte, certs []SNPCert) (json.RawMessage, error) {
	r, err := SNPReportFromBytes(report)
	if err != nil {
		return nil, err
	}
	var chain []SNPCertEntry
	for _, c := range certs {
		e := SNPCertEntry{CertType: SNPCertType{Name: c.Type}, Data: c.DER}
		switch c.Type {
		case "ARK", "ASK", "VCEK", "VLEK", "CRL":
		default:
			e.CertType = SNPCertType{Name: "OTHER", GUID: c.Type}
		}
		chain = append(chain, e)
	}
	return json.Marshal(SNPEvidenceJSON{Report: r, CertChain: chain})
}

// SNPEvidenceJSON is trustee's snp evidence (guest-components' SnpEvidence).
type SNPEvidenceJSON struct {
	Report    *SNPReportJSON `json:"attestation_report"`
	CertChain []SNPCertEntry `json:"cert_chain"`
}

// SNPCertEntry is one cert_chain entry: the sev crate's CertTableEntry.
type SNPCertEntry struct {
	CertType SNPCertType `json:"cert_type"`
	Data     ByteList    `json:"data"`
}

// SNPCertType is the sev crate's CertType: a unit variant name or
// {"OTHER": "<guid>"}.
type SNPCertType struct{ Name, GUID string }

func (t SNPCertType) String() string { return t.Name }

func (t SNPCertType) MarshalJSON() ([]byte, error) {
	if t.Name == "OTHER" {
		return json.Marshal(map[string]string{"OTHER": t.GUID})
	}
	return json.Marshal(t.Name)
}

func (t *SNPCertType) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, &t.Name)
	}
	var other struct {
		GUID *string `json:"OTHER"`
	}
	if err := json.Unmarshal(b, &other); err != nil || other.GUID == nil {
		return fmt.Errorf("cert_type: want a name or {\"OTHER\": guid}")
	}
	t.Name, t.GUID = "OTHER", *other.GUID
	return nil
}

// ByteList is a byte string that JSON carries as an array of numbers 0 to
// 255, the way serde serializes Rust byte arrays and Vec<u8>.
type ByteList []byte

func (b ByteList) MarshalJSON() ([]byte, error) {
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

func (b *ByteList) UnmarshalJSON(data []byte) error {
	bad := errors.New("want an array of byte values 0 to 255")
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '[' {
		return bad
	}
	out := make(ByteList, 0, len(data)/2)
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == ']' {
		*b = out
		return nil
	}
	for {
		start, n := i, 0
		for i < len(data) && data[i] >= '0' && data[i] <= '9' {
			if n = n*10 + int(data[i]-'0'); n > 255 || i > start && data[start] == '0' {
				return bad
			}
			i++
		}
		if i == start {
			return bad
		}
		out = append(out, byte(n))
		if i = skipSpace(data, i); i >= len(data) {
			return bad
		}
		if data[i] == ']' {
			break
		}
		if data[i] != ',' {
			return bad
		}
		i = skipSpace(data, i+1)
	}
	*b = out
	return nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}
