// Package evidence produces TEE evidence for remote attestation: attesters
// for the sample TEE, TPMs (also a coffer VM guest's vTPM, with credential
// activation), SEV-SNP and TDX guests, one row each in the attester table
// (registry.go), which Detect probes the way the CoCo attestation agent does.
package evidence

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/spec"
)

// Attester produces evidence binding reportData (the protocol's digest of
// the tee key, nonce and additional evidence).
type Attester interface {
	Tee() string
	Evidence(ctx context.Context, reportData []byte) (json.RawMessage, error)
}

// Handshaker is an Attester that takes part in the broker's /auth step:
// the client sends AuthParams as the request's extra-params and gives the
// challenge's extra-params to Challenge before it asks for Evidence. The
// TPM of a coffer VM guest uses it for credential activation (its EK
// certificate and AK go out; the broker's credential, sealed to both,
// comes back and is activated in the TPM).
type Handshaker interface {
	Attester
	AuthParams(ctx context.Context) (json.RawMessage, error)
	Challenge(ctx context.Context, extraParams json.RawMessage) error
}

// Sample is the CoCo "sample" attester: no hardware, for development and
// tests. Its evidence is {"svn":"1","report_data":"<std base64>"}.
type Sample struct{}

// Tee implements Attester.
func (Sample) Tee() string { return string(protocol.TeeSample) }

// Evidence implements Attester.
func (Sample) Evidence(_ context.Context, reportData []byte) (json.RawMessage, error) {
	return json.Marshal(struct {
		SVN        string `json:"svn"`
		ReportData string `json:"report_data"`
	}{"1", base64.StdEncoding.EncodeToString(reportData)})
}

// unimplemented is a TEE that was detected but has no attester in coffer yet.
type unimplemented struct{ tee string }

func (u unimplemented) Tee() string { return u.tee }
func (u unimplemented) Evidence(context.Context, []byte) (json.RawMessage, error) {
	return nil, fmt.Errorf("TEE %q detected but coffer has no %s attester yet (use --tee sample for development): %w", u.tee, u.tee, spec.ErrUnsupported)
}

// configfsTSM is where Linux's configfs-tsm report interface lives: SNP
// and TDX guests of recent kernels offer it instead of, or besides, their
// device.
const configfsTSM = "/sys/kernel/config/tsm/report"

// ErrNoTEE is Detect's answer on a machine with no TEE it knows.
var ErrNoTEE = fmt.Errorf("no TEE found (no /dev/tdx_guest, /dev/sev-guest, configfs-tsm or /dev/tpmrm0): use --tee sample for development: %w", spec.ErrUnsupported)
