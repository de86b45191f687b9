package attest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/coffer-dev/coffer/kbs/attest/eventlog"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/spec"
)

// Bounds on tpm evidence, checked before the part they bound is decoded.
const (
	MaxTPMEvidence  = 768 << 10 // the evidence JSON (a vm guest's carries its event logs)
	MaxTPMAKPublic  = 2 << 10   // ak_public, decoded PKIX DER
	MaxTPMMessage   = 1 << 10   // tpm_quote.message, decoded TPMS_ATTEST
	MaxTPMSignature = 1 << 10   // tpm_quote.signature, decoded TPMT_SIGNATURE
)

// The evidence format's fixed shape (CoCo's TPM attester).
const (
	tpmPCRs        = 24 // SHA-256 PCRs 0-23, in order
	tpmInitDataPCR = 8
	tpmReportData  = 32 // qualifying data: report data truncated or zero-padded
)

// NewTPM returns the tpm verifier. It checks the evidence of CoCo's TPM
// attester (guest-components attestation-agent/attester/src/tpm) as
// trustee's TPM verifier (deps/verifier/src/tpm) does:
//
//	{"ak_public":"<std base64 PKIX DER of the AK>",
//	 "tpm_quote":{"message":"<std base64 TPMS_ATTEST>",
//	              "signature":"<std base64 TPMT_SIGNATURE>",
//	              "pcrs":["<hex SHA-256 PCR0>", …, "<hex PCR23>"]}}
//
// The message must be a TPM2_Quote (TPM_ST_ATTEST_QUOTE, magic
// TPM_GENERATED_VALUE) signed by ak_public (RSASSA-SHA256 as CoCo's
// attester signs, or ECDSA-SHA256 with a P-256/P-384 AK); its PCR digest
// must be the SHA-256 of pcrs[0] || … || pcrs[23]; its qualifying data must
// be the report data truncated or zero-padded to 32 bytes; with init-data,
// PCR8 must equal SHA-256(32 zero bytes || SHA-256(init-data)), the value
// of a zero PCR extended once with the init-data digest (CoCo's
// bind_init_data), so init-data must use algorithm "sha256".
//
// Claims (those trustee's TPM verifier emits, same names and encodings):
//
//	ak_public    std base64 PKIX DER of the AK, canonically encoded: the
//	             string CoCo's attester sends and coffer tpm ak-public prints
//	pcr00…pcr23  lowercase hex of the SHA-256 PCRs
//	init_data    lowercase hex of PCR8 (always, as trustee emits it)
//	report_data  lowercase hex of the quote's qualifying data
//
// Whether the AK belongs to a trusted TPM is not decided here: the
// attestation policy compares ak_public with reference values. A registered
// AK must be a restricted signing key (coffer tpm ak-public prints one), or
// its owner could sign a quote-shaped message of his choosing.
//
// Deliberate differences from trustee: the quote must cover exactly PCRs
// 0-23 of the SHA-256 bank (trustee hashes pcrs[] without reading the
// quote's selection, so a quote over other banks could have its PCRs
// mislabelled); ECDSA AKs are accepted; qualifying data of 64 bytes equal to
// the zero-padded report data (what CoCo's attester sent before it moved to
// 32 bytes, as in trustee's test_data/tpm_evidence.json) binds too; an RSA
// AK must have 2048 to 4096 bits; init-data with another algorithm than
// sha256 is refused with an error where trustee fails on the length.
func NewTPM(cfg Config) Verifier {
	return tpmVerifier{roots: cfg.EKRoots, key: cfg.ActivationKey, now: cfg.now}
}

type tpmVerifier struct {
	roots *x509.CertPool
	key   []byte
	now   func() time.Time
}

type tpmEvidence struct {
	AKPublic string `json:"ak_public"`
	Quote    *struct {
		Signature string   `json:"signature"`
		Message   string   `json:"message"`
		PCRs      []string `json:"pcrs"`
	} `json:"tpm_quote"`
	// coffer vm guests (tpm_vm.go)
	EventLog    string               `json:"event_log"`
	IMALog      string               `json:"ima_log"`
	InitLog     []eventlog.InitEvent `json:"init_log"`
	EKCert      string               `json:"ek_cert"`
	AKTPMPublic string               `json:"ak_tpmt_public"`
	Activation  string               `json:"activation"`
	// coffer's agent: the CoCo runtime event log (AAEL)
	AAEL string `json:"aa_eventlog"`
}

// tpmQuote is a parsed TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE.
type tpmQuote struct {
	extraData []byte
	// selection is the TPML_PCR_SELECTION: hash algorithm → bitmap.
	selection []tpmPCRSelection
	pcrDigest []byte
}

type tpmPCRSelection struct {
	hash   uint16
	bitmap []byte
}

// TPM 2.0 constants (TPM 2.0 Part 2).
const (
	tpmGeneratedValue = 0xff544347
	tpmSTAttestQuote  = 0x8018
	tpmAlgSHA256      = 0x000b
	tpmAlgRSASSA      = 0x0014
	tpmAlgECDSA       = 0x0018
	tpmHashCount      = 16 // bound on TPML_PCR_SELECTION.count
	tpmPCRSelectMax   = 32 // bound on sizeofSelect
	tpmMaxDigest      = 64 // sizeof(TPMU_HA)
	tpmMaxName        = 2 + tpmMaxDigest
	tpmMaxECCParam    = 66 // P-521 coordinate
)

func tpmUnsupported(format string, a ...any) error {
	return fmt.Errorf("tpm evidence: "+format+": %w", append(a, spec.ErrUnsupported)...)
}

func tpmIntegrity(format string, a ...any) error {
	return fmt.Errorf("tpm quote: "+format+": %w", append(a, spec.ErrIntegrity)...)
}

// Verify implements Verifier.
func (v tpmVerifier) Verify(_ context.Context, ev Evidence) (Claims, error) {
	if len(ev.Primary) > MaxTPMEvidence {
		return nil, tpmUnsupported("%d bytes, at most %d", len(ev.Primary), MaxTPMEvidence)
	}
	if len(ev.ReportData) == 0 && !ev.NoBinding {
		return nil, fmt.Errorf("tpm evidence: no expected report data: %w", spec.ErrIntegrity)
	}
	var te tpmEvidence
	if err := json.Unmarshal(ev.Primary, &te); err != nil {
		return nil, tpmUnsupported("%v", err)
	}
	if te.Quote == nil {
		return nil, tpmUnsupported("no tpm_quote")
	}
	akDER, err := tpmBase64("ak_public", te.AKPublic, MaxTPMAKPublic)
	if err != nil {
		return nil, err
	}
	msg, err := tpmBase64("tpm_quote.message", te.Quote.Message, MaxTPMMessage)
	if err != nil {
		return nil, err
	}
	sig, err := tpmBase64("tpm_quote.signature", te.Quote.Signature, MaxTPMSignature)
	if err != nil {
		return nil, err
	}
	if len(te.Quote.PCRs) != tpmPCRs {
		return nil, tpmUnsupported("%d pcrs, want %d (SHA-256 PCRs 0-23)", len(te.Quote.PCRs), tpmPCRs)
	}
	pcrs := make([][]byte, tpmPCRs)
	for i, s := range te.Quote.PCRs {
		if len(s) != 2*sha256.Size {
			return nil, tpmUnsupported("pcrs[%d] has %d characters, want %d hex digits", i, len(s), 2*sha256.Size)
		}
		if pcrs[i], err = hex.DecodeString(s); err != nil {
			return nil, tpmUnsupported("pcrs[%d] is not hex", i)
		}
	}
	ak, err := tpmAK(akDER)
	if err != nil {
		return nil, err
	}
	q, err := parseTPMQuote(msg)
	if err != nil {
		return nil, err
	}
	if err := verifyTPMSignature(ak, msg, sig); err != nil {
		return nil, err
	}
	if !q.coversPCRs0to23() {
		return nil, tpmUnsupported("the quote does not cover exactly PCRs 0-23 of the SHA-256 bank")
	}
	h := sha256.New()
	for _, p := range pcrs {
		h.Write(p)
	}
	if !bytes.Equal(h.Sum(nil), q.pcrDigest) {
		return nil, tpmIntegrity("PCR digest does not match pcrs[]")
	}
	if len(ev.ReportData) > 0 && !tpmBinds(q.extraData, ev.ReportData) {
		return nil, tpmIntegrity("qualifying data does not bind this nonce and tee key")
	}
	if ev.InitData != nil {
		d, err := InitDataDigest(ev.InitData)
		if err != nil {
			return nil, err
		}
		if len(d) != sha256.Size {
			return nil, fmt.Errorf("tpm evidence binds init-data in SHA-256 PCR%d: init-data algorithm must be sha256 (its digest has %d bytes): %w", tpmInitDataPCR, len(d), spec.ErrUnsupported)
		}
		want := sha256.Sum256(append(make([]byte, sha256.Size), d...))
		if !bytes.Equal(pcrs[tpmInitDataPCR], want[:]) {
			return nil, tpmIntegrity("PCR%d does not hold the init-data digest (want SHA-256(32 zero bytes || SHA-256(init-data)))", tpmInitDataPCR)
		}
	}
	c := Claims{
		"ak_public":   base64.StdEncoding.EncodeToString(akDER),
		"init_data":   hex.EncodeToString(pcrs[tpmInitDataPCR]),
		"report_data": hex.EncodeToString(q.extraData),
	}
	for i, p := range pcrs {
		c[fmt.Sprintf("pcr%02d", i)] = hex.EncodeToString(p)
	}
	if err := v.measuredBoot(&te, pcrs, c); err != nil {
		return nil, err
	}
	if err := runtimeLog(&te, pcrs, c); err != nil {
		return nil, err
	}
	if err := v.endorsement(&te, akDER, ev.Nonce, c); err != nil {
		return nil, err
	}
	return c, nil
}

// tpmBase64 decodes a std base64 field of at most max decoded bytes,
// refusing longer text before decoding it.
func tpmBase64(name, s string, max int) ([]byte, error) {
	if s == "" {
		return nil, tpmUnsupported("no %s", name)
	}
	if len(s) > base64.StdEncoding.EncodedLen(max) {
		return nil, tpmUnsupported("%s of %d characters, at most %d", name, len(s), base64.StdEncoding.EncodedLen(max))
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, tpmUnsupported("%s is not std base64", name)
	}
	if len(b) > max {
		return nil, tpmUnsupported("%s of %d bytes, at most %d", name, len(b), max)
	}
	return b, nil
}

func tpmAK(der []byte) (crypto.PublicKey, error) {
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, tpmUnsupported("ak_public: %v", err)
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 || n > 4096 {
			return nil, tpmUnsupported("ak_public: RSA key of %d bits, want 2048 to 4096", n)
		}
		return k, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, tpmUnsupported("ak_public: ECDSA curve %s, want P-256 or P-384", k.Curve.Params().Name)
		}
		return k, nil
	}
	return nil, tpmUnsupported("ak_public: %T key, want RSA or ECDSA", pub)
}

// tpmReader reads TPM 2.0 marshalled structures; the first short read
// sticks.
type tpmReader struct {
	b   []byte
	err error
}

func (r *tpmReader) next(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.b) {
		r.err = errors.New("truncated")
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *tpmReader) u8() uint8 {
	if v := r.next(1); v != nil {
		return v[0]
	}
	return 0
}

func (r *tpmReader) u16() uint16 {
	if v := r.next(2); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (r *tpmReader) u32() uint32 {
	if v := r.next(4); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

// tpm2b reads a TPM2B_ structure whose size may be at most max.
func (r *tpmReader) tpm2b(name string, max int) []byte {
	n := int(r.u16())
	if r.err == nil && n > max {
		r.err = fmt.Errorf("%s of %d bytes, at most %d", name, n, max)
		return nil
	}
	return r.next(n)
}

// done reports the first error, or trailing bytes.
func (r *tpmReader) done() error {
	if r.err == nil && len(r.b) > 0 {
		return fmt.Errorf("%d trailing bytes", len(r.b))
	}
	return r.err
}

// parseTPMQuote parses a TPMS_ATTEST that must be a quote.
func parseTPMQuote(msg []byte) (*tpmQuote, error) {
	r := &tpmReader{b: msg}
	if magic := r.u32(); r.err == nil && magic != tpmGeneratedValue {
		return nil, tpmUnsupported("message magic %#x is not TPM_GENERATED_VALUE", magic)
	}
	if typ := r.u16(); r.err == nil && typ != tpmSTAttestQuote {
		return nil, tpmUnsupported("message type %#x is not TPM_ST_ATTEST_QUOTE", typ)
	}
	var q tpmQuote
	r.tpm2b("qualifiedSigner", tpmMaxName)
	q.extraData = r.tpm2b("extraData", tpmMaxDigest)
	r.next(8 + 4 + 4 + 1) // clockInfo: clock, resetCount, restartCount, safe
	r.next(8)             // firmwareVersion
	n := r.u32()
	if r.err == nil && n > tpmHashCount {
		return nil, tpmUnsupported("message: %d PCR selections, at most %d", n, tpmHashCount)
	}
	for range n {
		s := tpmPCRSelection{hash: r.u16()}
		size := int(r.u8())
		if r.err == nil && size > tpmPCRSelectMax {
			return nil, tpmUnsupported("message: a PCR bitmap of %d bytes, at most %d", size, tpmPCRSelectMax)
		}
		s.bitmap = r.next(size)
		q.selection = append(q.selection, s)
	}
	q.pcrDigest = r.tpm2b("pcrDigest", tpmMaxDigest)
	if err := r.done(); err != nil {
		return nil, tpmUnsupported("message: %v", err)
	}
	return &q, nil
}

// coversPCRs0to23 reports whether the quote's selection is exactly PCRs
// 0-23 of the SHA-256 bank, the PCRs pcrs[] names in order.
func (q *tpmQuote) coversPCRs0to23() bool {
	if len(q.selection) != 1 || q.selection[0].hash != tpmAlgSHA256 {
		return false
	}
	bm := q.selection[0].bitmap
	if len(bm) < tpmPCRs/8 {
		return false
	}
	for i, b := range bm {
		if (i < tpmPCRs/8 && b != 0xff) || (i >= tpmPCRs/8 && b != 0) {
			return false
		}
	}
	return true
}

// verifyTPMSignature checks sig, a TPMT_SIGNATURE, over msg with ak.
func verifyTPMSignature(ak crypto.PublicKey, msg, sig []byte) error {
	r := &tpmReader{b: sig}
	alg, hash := r.u16(), r.u16()
	if r.err == nil && hash != tpmAlgSHA256 {
		return tpmUnsupported("signature hash algorithm %#x, want SHA-256", hash)
	}
	digest := sha256.Sum256(msg)
	switch alg {
	case tpmAlgRSASSA:
		s := r.tpm2b("RSA signature", 512)
		if err := r.done(); err != nil {
			return tpmUnsupported("signature: %v", err)
		}
		k, ok := ak.(*rsa.PublicKey)
		if !ok {
			return tpmUnsupported("an RSASSA signature from a non-RSA ak_public")
		}
		if rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], s) != nil {
			return tpmIntegrity("signature does not verify with ak_public")
		}
	case tpmAlgECDSA:
		rb, sb := r.tpm2b("ECDSA r", tpmMaxECCParam), r.tpm2b("ECDSA s", tpmMaxECCParam)
		if err := r.done(); err != nil {
			return tpmUnsupported("signature: %v", err)
		}
		k, ok := ak.(*ecdsa.PublicKey)
		if !ok {
			return tpmUnsupported("an ECDSA signature from a non-ECDSA ak_public")
		}
		if !ecdsa.Verify(k, digest[:], new(big.Int).SetBytes(rb), new(big.Int).SetBytes(sb)) {
			return tpmIntegrity("signature does not verify with ak_public")
		}
	default:
		if r.err != nil {
			return tpmUnsupported("signature: %v", r.err)
		}
		return tpmUnsupported("signature algorithm %#x, want RSASSA (0x14) or ECDSA (0x18)", alg)
	}
	return nil
}

// tpmBinds reports whether the quote's qualifying data is the report data
// truncated or zero-padded to 32 bytes, or zero-padded to 64 (CoCo's
// earlier attester).
func tpmBinds(extra, reportData []byte) bool {
	want := protocol.ReportData(reportData, tpmReportData)
	if len(extra) == 64 && len(reportData) <= 64 {
		want = protocol.ReportData(reportData, 64)
	}
	return subtle.ConstantTimeCompare(extra, want) == 1
}

// runtimeLog replays the AAEL (ExtendRuntimeMeasurement, PullImage
// records) against the quoted PCRs and puts its events under the claim
// "aael" ([{pcr, domain, operation, content}]), so a policy can require
// which images the guest pulled. No log: no claim.
func runtimeLog(te *tpmEvidence, pcrs [][]byte, c Claims) error {
	if te.AAEL == "" {
		return nil
	}
	raw, err := tpmBase64("aa_eventlog", te.AAEL, eventlog.MaxLogBytes)
	if err != nil {
		return err
	}
	events, err := eventlog.AAEL(raw, pcrs)
	if err != nil {
		return err
	}
	out := make([]any, 0, len(events))
	// All of them (at most eventlog.MaxEvents): a policy that forbids an
	// image must see every pull.
	for _, e := range events {
		out = append(out, map[string]any{"pcr": e.PCR, "domain": e.Domain, "operation": e.Operation, "content": e.Content})
	}
	c["aael"] = out
	// The registers the log covers: a policy that forbids an image must
	// also require its register here (a guest that sends no entries for a
	// register hides nothing it extended, but says nothing either).
	regs := []any{}
	seen := map[int]bool{}
	for _, e := range events {
		if !seen[e.PCR] {
			seen[e.PCR] = true
			regs = append(regs, e.PCR)
		}
	}
	c["aael_pcrs"] = regs
	return nil
}
