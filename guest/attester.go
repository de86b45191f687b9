package guest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"

	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/tpm"
)

// attester is the guest's TPM attester: CoCo's TPM evidence plus the
// measured-boot logs, the EK certificate and credential activation
// (tpm.Evidence documents the fields).
type attester struct {
	t          *tpm.TPM
	initLog    []tpm.InitEvent
	activation []byte
}

// authParams is the extra-params of /auth: the EK certificate and the
// AK's TPMT_PUBLIC, so that the broker can seal a credential to both.
type authParams struct {
	EKCert      string `json:"ek_cert"`
	AKTPMPublic string `json:"ak_tpmt_public"`
}

// challengeParams is the broker's answer in the challenge's extra-params.
type challengeParams struct {
	CredentialBlob  string `json:"credential_blob"`
	EncryptedSecret string `json:"encrypted_secret"`
}

func (a *attester) Tee() string { return "tpm" }

func (a *attester) AuthParams(ctx context.Context) (json.RawMessage, error) {
	ek, err := a.t.EKCertificate(ctx)
	if err != nil {
		return nil, err
	}
	ak, err := a.t.AKTPMPublic(ctx)
	if err != nil {
		return nil, err
	}
	return json.Marshal(authParams{EKCert: base64.StdEncoding.EncodeToString(ek), AKTPMPublic: base64.StdEncoding.EncodeToString(ak)})
}

func (a *attester) Challenge(ctx context.Context, extra json.RawMessage) error {
	var cp challengeParams
	if len(extra) == 0 || string(extra) == `""` || string(extra) == "null" {
		return nil // the broker trusts no EK CA: AK pin only
	}
	if len(extra) > 8<<10 {
		return fmt.Errorf("challenge extra-params of %d bytes: %w", len(extra), spec.ErrUnsupported)
	}
	if err := json.Unmarshal(extra, &cp); err != nil || cp.CredentialBlob == "" {
		return fmt.Errorf("the broker sent no credential to activate (does it trust EKs? kbs serve --tpm-ek-ca): %w", spec.ErrUnsupported)
	}
	blob, err1 := base64.StdEncoding.DecodeString(cp.CredentialBlob)
	sec, err2 := base64.StdEncoding.DecodeString(cp.EncryptedSecret)
	if err1 != nil || err2 != nil {
		return fmt.Errorf("credential is not base64: %w", spec.ErrUnsupported)
	}
	s, err := a.t.ActivateCredential(ctx, blob, sec)
	if err != nil {
		return err
	}
	a.activation = s
	return nil
}

func (a *attester) Evidence(ctx context.Context, reportData []byte) (json.RawMessage, error) {
	return a.evidence(ctx, reportData, false)
}

// evidence quotes and adds the logs; withEK adds the EK certificate and
// the AK's public area (measure mode: the host reads them from it).
func (a *attester) evidence(ctx context.Context, reportData []byte, withEK bool) (json.RawMessage, error) {
	ev, err := a.t.Quote(ctx, reportData)
	if err != nil {
		return nil, err
	}
	// The logs are read after the quote: they hold at least what it
	// covers (a verifier replays a prefix of the IMA log).
	fw, err := readBounded(firmwareLog, maxLogBytes)
	if err != nil {
		return nil, fmt.Errorf("firmware event log: %w", err)
	}
	ima, err := readBounded(imaLog, maxLogBytes)
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("IMA log: %w", err)
	}
	ev.EventLog = base64.StdEncoding.EncodeToString(fw)
	ev.IMALog = base64.StdEncoding.EncodeToString(ima)
	ev.InitLog = a.initLog
	if a.activation != nil {
		ev.Activation = base64.StdEncoding.EncodeToString(a.activation)
	}
	if a.activation != nil || withEK {
		p, err := a.AuthParams(ctx)
		if err != nil {
			return nil, err
		}
		var ap authParams
		json.Unmarshal(p, &ap)
		ev.EKCert, ev.AKTPMPublic = ap.EKCert, ap.AKTPMPublic
	}
	return json.Marshal(ev)
}
