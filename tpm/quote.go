package tpm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"

	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"

	"github.com/coffer-dev/coffer/spec"
)

// Sizes and indexes of the evidence format.
const (
	// NumPCRs is how many PCRs of the SHA-256 bank a quote covers (0 to 23).
	NumPCRs = 24
	// ReportDataSize is the size of the quote's qualifying data: the
	// report data, truncated or zero-padded.
	ReportDataSize = 32
	// InitDataPCR is the PCR CoCo binds initdata to: its SHA-256 digest
	// extended once into a PCR that was zero, so that the PCR holds
	// SHA-256(32 zero bytes || digest).
	InitDataPCR = 8
)

// Evidence is the TPM evidence of CoCo's TPM attester, as JSON:
//
//	{"tpm_quote":{"signature":"<std base64 TPMT_SIGNATURE>",
//	              "message":"<std base64 TPMS_ATTEST>",
//	              "pcrs":["<hex SHA-256 PCR0>", …, "<hex PCR23>"]},
//	 "ak_public":"<std base64 PKIX DER of the AK>"}
//
// The message is a TPM2_Quote over PCRs 0-23 of the SHA-256 bank whose
// qualifying data is the report data truncated or zero-padded to
// ReportDataSize bytes; pcrs are those PCRs' values (lowercase hex), read
// right after the quote.
type Evidence struct {
	Quote    QuoteData `json:"tpm_quote"`
	AKPublic string    `json:"ak_public"`

	// coffer's VM guests add what a verifier needs to replay the measured
	// boot and to trust the TPM through its EK (CoCo's attester sends
	// none of these; trustee ignores them):
	//
	//	event_log       std base64 TCG PC Client event log of the firmware (PCRs 0-7)
	//	ima_log         std base64 of the kernel's IMA binary_runtime_measurements (PCR 10)
	//	init_log        coffer's init measurements (PCRs 8, 9), in order
	//	ek_cert         std base64 DER EK certificate
	//	ak_tpmt_public  std base64 TPMT_PUBLIC of the AK (its name is what the credential binds)
	//	activation      std base64 of the secret the broker sealed to EK and AK name
	EventLog    string      `json:"event_log,omitempty"`
	IMALog      string      `json:"ima_log,omitempty"`
	InitLog     []InitEvent `json:"init_log,omitempty"`
	EKCert      string      `json:"ek_cert,omitempty"`
	AKTPMPublic string      `json:"ak_tpmt_public,omitempty"`
	Activation  string      `json:"activation,omitempty"`
	// AAEL is coffer's agent's addition: the std base64 of the CoCo
	// runtime event log (TCG2 AAEL entries, as the AA's file holds them;
	// trustee's TPM evidence has no event log), replayed by the broker
	// into the claim "aael".
	AAEL string `json:"aa_eventlog,omitempty"`
}

// InitEvent is one measurement coffer's guest init extended: PCR, what it
// measured ("init-data", "cmdline"), the SHA-256 digest extended (hex),
// and for the command line the text measured.
type InitEvent struct {
	PCR    int    `json:"pcr"`
	Event  string `json:"event"`
	Digest string `json:"digest"`
	Data   string `json:"data,omitempty"`
}

// QuoteData is Evidence's tpm_quote.
type QuoteData struct {
	Signature string   `json:"signature"`
	Message   string   `json:"message"`
	PCRs      []string `json:"pcrs"`
}

var quoteSelection = func() tpm2.PCRSelection {
	sel := tpm2.PCRSelection{Hash: tpm2.AlgSHA256}
	for i := range NumPCRs {
		sel.PCRs = append(sel.PCRs, i)
	}
	return sel
}()

// quoteAttempts bounds how often Quote retries when a PCR changed between
// the quote and reading the PCRs.
const quoteAttempts = 3

// Quote quotes PCRs 0-23 of the SHA-256 bank with the AK, qualified by
// reportData truncated or zero-padded to ReportDataSize bytes, and returns
// the evidence. The PCR values are read after the quote; should one change
// in between (something extended it), Quote quotes again.
func (t *TPM) Quote(ctx context.Context, reportData []byte) (*Evidence, error) {
	end, err := t.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer end()
	if err := t.loadAK(ctx); err != nil {
		return nil, err
	}
	akDER, err := x509.MarshalPKIXPublicKey(t.ak.PublicKey())
	if err != nil {
		return nil, fmt.Errorf("tpm AK: %w", err)
	}
	nonce := make([]byte, ReportDataSize)
	copy(nonce, reportData)
	for range quoteAttempts {
		msg, sig, err := tpm2.QuoteRaw(t.rw, t.ak.Handle(), "", "", nonce, quoteSelection, tpm2.AlgNull)
		if err != nil {
			return nil, cmdErr(ctx, "quote", err)
		}
		pcrs, err := t.readPCRs(ctx)
		if err != nil {
			return nil, err
		}
		ad, err := tpm2.DecodeAttestationData(msg)
		if err != nil || ad.AttestedQuoteInfo == nil {
			return nil, fmt.Errorf("tpm quote: the TPM returned no quote (%v): %w", err, spec.ErrUnsupported)
		}
		h := sha256.New()
		for _, p := range pcrs {
			h.Write(p)
		}
		if !bytes.Equal(h.Sum(nil), ad.AttestedQuoteInfo.PCRDigest) {
			continue // a PCR changed since the quote
		}
		ev := &Evidence{
			Quote: QuoteData{
				Signature: base64.StdEncoding.EncodeToString(sig),
				Message:   base64.StdEncoding.EncodeToString(msg),
			},
			AKPublic: base64.StdEncoding.EncodeToString(akDER),
		}
		for _, p := range pcrs {
			ev.Quote.PCRs = append(ev.Quote.PCRs, hex.EncodeToString(p))
		}
		return ev, nil
	}
	return nil, fmt.Errorf("tpm quote: PCRs changed between quote and read %d times in a row", quoteAttempts)
}

// ReadPCRs returns PCRs 0-23 of the SHA-256 bank.
func (t *TPM) ReadPCRs(ctx context.Context) ([][]byte, error) {
	end, err := t.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer end()
	return t.readPCRs(ctx)
}

func (t *TPM) readPCRs(ctx context.Context) ([][]byte, error) {
	pcrs := make([][]byte, NumPCRs)
	for lo := 0; lo < NumPCRs; lo += 8 { // TPM2_PCR_Read returns at most 8
		vals, err := tpm2.ReadPCRs(t.rw, tpm2.PCRSelection{Hash: tpm2.AlgSHA256, PCRs: quoteSelection.PCRs[lo : lo+8]})
		if err != nil {
			return nil, cmdErr(ctx, "reading PCRs", err)
		}
		for i := lo; i < lo+8; i++ {
			if len(vals[i]) != sha256.Size {
				return nil, fmt.Errorf("tpm: PCR %d of the SHA-256 bank not returned (is the bank allocated?): %w", i, spec.ErrUnsupported)
			}
			pcrs[i] = vals[i]
		}
	}
	return pcrs, nil
}

// ExtendPCR extends PCR index (0-23) of the SHA-256 bank with digest, a
// SHA-256 digest. CoCo binds initdata with ExtendPCR(ctx, InitDataPCR,
// SHA-256 of the initdata document).
func (t *TPM) ExtendPCR(ctx context.Context, index int, digest []byte) error {
	if index < 0 || index >= NumPCRs {
		return fmt.Errorf("tpm: PCR %d out of range 0-%d: %w", index, NumPCRs-1, spec.ErrUnsupported)
	}
	if len(digest) != sha256.Size {
		return fmt.Errorf("tpm: extending the SHA-256 bank needs a %d-byte digest, not %d bytes: %w", sha256.Size, len(digest), spec.ErrUnsupported)
	}
	end, err := t.begin(ctx)
	if err != nil {
		return err
	}
	defer end()
	if err := tpm2.PCRExtend(t.rw, tpmutil.Handle(index), tpm2.AlgSHA256, digest, ""); err != nil {
		return cmdErr(ctx, fmt.Sprintf("extending PCR %d", index), err)
	}
	return nil
}
