package evidence

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"

	"github.com/google/go-tdx-guest/client"

	"github.com/coffer-dev/coffer/spec"
)

// ErrNoTDX is what NewTDX returns on a machine that is not a TDX guest.
var ErrNoTDX = fmt.Errorf("no TDX device (/dev/tdx_guest, configfs-tsm): not a TDX guest; use --tee sample for development: %w", spec.ErrUnsupported)

// TDX is the Intel TDX attester. Its evidence is what guest-components' tdx
// attester sends and trustee's tdx verifier reads:
//
//	{"cc_eventlog": null, "quote": "<std base64 of the DCAP quote>"}
//
// The quote carries the report data zero-padded to 64 bytes. coffer sends
// no event log: trustee replays one when present and refuses evidence whose
// log does not match the RTMRs, and without one it only warns.
type TDX struct {
	quote func(reportData [64]byte) ([]byte, error)
}

// NewTDX returns the TDX attester of this guest, using configfs-tsm or
// /dev/tdx_guest (go-tdx-guest's client), or ErrNoTDX.
func NewTDX() (Attester, error) {
	if qp, err := client.GetQuoteProvider(); err == nil && qp.IsSupported() == nil {
		return &TDX{func(rd [64]byte) ([]byte, error) { return client.GetRawQuote(qp, rd) }}, nil
	}
	for _, dev := range []string{"/dev/tdx_guest", "/dev/tdx-guest"} {
		if _, err := os.Stat(dev); err == nil {
			return &TDX{func(rd [64]byte) ([]byte, error) {
				d, err := client.OpenDevice()
				if err != nil {
					return nil, err
				}
				defer d.Close()
				return client.GetRawQuote(d, rd)
			}}, nil
		}
	}
	return nil, ErrNoTDX
}

// Tee implements Attester.
func (*TDX) Tee() string { return "tdx" }

// Evidence implements Attester.
func (a *TDX) Evidence(_ context.Context, reportData []byte) (json.RawMessage, error) {
	if len(reportData) > 64 {
		return nil, fmt.Errorf("tdx: report data of %d bytes, at most 64: %w", len(reportData), spec.ErrUnsupported)
	}
	var rd [64]byte
	copy(rd[:], reportData)
	quote, err := a.quote(rd)
	if err != nil {
		return nil, fmt.Errorf("tdx: getting the quote: %w", err)
	}
	return tdxEvidence(quote)
}

func tdxEvidence(quote []byte) (json.RawMessage, error) {
	return json.Marshal(struct {
		CCEventlog *string `json:"cc_eventlog"`
		Quote      string  `json:"quote"`
	}{nil, base64.StdEncoding.EncodeToString(quote)})
}
