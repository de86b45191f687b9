package evidence

import (
	"context"
	"encoding/json"

	"github.com/coffer-dev/coffer/tpm"
)

// TPM is CoCo's TPM attester: a quote of the SHA-256 PCRs 0-23 by the
// TPM's attestation key, qualified by the report data truncated or
// zero-padded to 32 bytes (see tpm.Evidence for the JSON and the tpm
// package for which AK it uses). A TPM alone is not a TEE: it vouches for
// what was measured into its PCRs, not for the confidentiality of the
// memory it runs in.
type TPM struct{ addr string }

// NewTPM returns the attester of the TPM at addr: a device path ("" is
// tpm.DefaultAddr, /dev/tpmrm0) or tcp://HOST:PORT (swtpm). The TPM is
// opened for each Evidence call, so the attester holds no connection
// between attestations (swtpm serves one at a time).
func NewTPM(addr string) (Attester, error) {
	if err := tpm.CheckAddr(addr); err != nil {
		return nil, err
	}
	return &TPM{addr: addr}, nil
}

// Tee implements Attester.
func (*TPM) Tee() string { return "tpm" }

// Addr is the TPM's address as given to NewTPM ("" is tpm.DefaultAddr).
func (a *TPM) Addr() string { return a.addr }

// Evidence implements Attester.
func (a *TPM) Evidence(ctx context.Context, reportData []byte) (json.RawMessage, error) {
	t, err := tpm.Open(ctx, a.addr)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	ev, err := t.Quote(ctx, reportData)
	if err != nil {
		return nil, err
	}
	return json.Marshal(ev)
}

// Option configures ForTee.
type Option func(*options)

type options struct{ tpmAddr string }

// WithTPM sets the TPM the "tpm" attester uses (default tpm.DefaultAddr).
func WithTPM(addr string) Option { return func(o *options) { o.tpmAddr = addr } }

func collectOptions(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return o
}
