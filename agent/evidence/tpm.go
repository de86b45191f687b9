package evidence

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/coffer-dev/coffer/tpm"
)

// TPM is CoCo's TPM attester: a quote of the SHA-256 PCRs 0-23 by the
// TPM's attestation key, qualified by the report data truncated or
// zero-padded to 32 bytes (see tpm.Evidence for the JSON and the tpm
// package for which AK it uses). A TPM alone is not a TEE: it vouches for
// what was measured into its PCRs, not for the confidentiality of the
// memory it runs in.
type TPM struct{ addr, aael string }

// DefaultAAELPath is where guest-components' AA keeps the runtime event
// log (AAEL); $AAEL_PATH moves it, as it does for guest-components.
const DefaultAAELPath = "/run/attestation-agent/eventlog"

// maxAAEL bounds the runtime event log sent with the evidence (the
// broker's bound).
const maxAAEL = 1 << 20

// NewTPM returns the attester of the TPM at addr: a device path ("" is
// tpm.DefaultAddr, /dev/tpmrm0) or tcp://HOST:PORT (swtpm). The TPM is
// opened for each Evidence call, so the attester holds no connection
// between attestations (swtpm serves one at a time).
func NewTPM(addr string) (Attester, error) {
	if err := tpm.CheckAddr(addr); err != nil {
		return nil, err
	}
	p := os.Getenv("AAEL_PATH")
	if p == "" {
		p = DefaultAAELPath
	}
	return &TPM{addr: addr, aael: p}, nil
}

// WithEventLog returns a copy of a that sends the runtime event log at
// path ("" sends none) with its evidence.
func (a *TPM) WithEventLog(path string) *TPM {
	c := *a
	c.aael = path
	return &c
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
	// Read after the quote, as guest-components reads its logs: the
	// broker replays the prefix the quote covers.
	if a.aael != "" {
		log, err := readAAEL(a.aael)
		if err != nil {
			return nil, err
		}
		if len(log) > 0 {
			ev.AAEL = base64.StdEncoding.EncodeToString(log)
		}
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

// readAAEL reads the runtime event log; a missing file is an empty log.
func readAAEL(path string) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("runtime event log: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxAAEL+1))
	if err != nil {
		return nil, fmt.Errorf("runtime event log: %w", err)
	}
	if len(b) > maxAAEL {
		return nil, fmt.Errorf("runtime event log %s is over %d bytes (the broker's bound)", path, maxAAEL)
	}
	return b, nil
}
