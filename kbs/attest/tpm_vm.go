package attest

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"github.com/coffer-dev/coffer/internal/pemcert"
	"os"

	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/legacy/tpm2/credactivation"

	"github.com/coffer-dev/coffer/kbs/attest/eventlog"
	"github.com/coffer-dev/coffer/spec"
)

// Bounds on the parts of a vm guest's tpm evidence.
const (
	MaxTPMEKCert      = 4 << 10
	MaxTPMPublicArea  = 1 << 10
	maxTPMExtraParams = 16 << 10
	maxClaimEvents    = 64 // events per log copied into claims (all are replayed)
)

// LoadEKRoots reads PEM certificates (roots and intermediates of EK
// certificate authorities; kbs serve --tpm-ek-ca FILE, repeatable) into a
// pool. An EK certificate is trusted when it chains to any of them.
func LoadEKRoots(files []string) (*x509.CertPool, error) {
	pems := make([][]byte, 0, len(files))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("EK CA: %w", err)
		}
		pems = append(pems, b)
	}
	return ParseEKRoots(files, pems)
}

// ParseEKRoots builds the EK CA pool from PEM contents already read (names
// label them in errors): each must hold at least one certificate. No
// contents: nil, EKs are not trusted.
func ParseEKRoots(names []string, pems [][]byte) (*x509.CertPool, error) {
	if len(pems) == 0 {
		return nil, nil
	}
	pool := x509.NewCertPool()
	for i, b := range pems {
		f := fmt.Sprint("#", i+1)
		if i < len(names) {
			f = names[i]
		}
		certs, err := pemcert.Parse(b, 0)
		if err != nil {
			return nil, fmt.Errorf("EK CA %s: %w", f, err)
		}
		for _, c := range certs {
			pool.AddCert(c)
		}
		if len(certs) == 0 {
			return nil, fmt.Errorf("EK CA %s: no PEM certificate: %w", f, spec.ErrUnsupported)
		}
	}
	return pool, nil
}

// tpmAuthParams is the /auth extra-params of a guest that asks for
// credential activation; tpmChallengeParams is the broker's answer.
type tpmAuthParams struct {
	EKCert      string `json:"ek_cert"`
	AKTPMPublic string `json:"ak_tpmt_public"`
}

type tpmChallengeParams struct {
	CredentialBlob  string `json:"credential_blob"`
	EncryptedSecret string `json:"encrypted_secret"`
}

// Challenge implements Challenger: credential activation within RCAR.
// When /auth's extra-params carry an EK certificate and the AK's
// TPMT_PUBLIC, and this broker trusts EK CAs, the EK certificate must
// chain to one; the answer is TPM2_MakeCredential (done in software) of a
// secret derived from the session's nonce and the AK's name, sealed to
// the EK. Only the TPM holding that EK, with an object of that name
// loaded, can recover it (TPM2_ActivateCredential); the guest returns it
// in its evidence (activation). Requests without extra-params (trustee's
// clients) and brokers without EK CAs get "".
func (v tpmVerifier) Challenge(_ context.Context, nonce string, extra json.RawMessage) (json.RawMessage, error) {
	empty := json.RawMessage(`""`)
	if len(extra) == 0 || string(extra) == `""` || string(extra) == "null" || v.roots == nil {
		return empty, nil
	}
	if len(extra) > maxTPMExtraParams {
		return nil, tpmUnsupported("auth extra-params of %d bytes, at most %d", len(extra), maxTPMExtraParams)
	}
	var ap tpmAuthParams
	if err := json.Unmarshal(extra, &ap); err != nil || ap.EKCert == "" {
		return empty, nil // not a credential-activation request
	}
	ek, err := v.checkEK(ap.EKCert)
	if err != nil {
		return nil, err
	}
	_, name, err := akName(ap.AKTPMPublic)
	if err != nil {
		return nil, err
	}
	blob, enc, err := credactivation.Generate(name, ek.PublicKey, 16, v.activationSecret(nonce, name))
	if err != nil {
		return nil, tpmUnsupported("making the credential for this EK: %v", err)
	}
	return json.Marshal(tpmChallengeParams{
		CredentialBlob:  base64.StdEncoding.EncodeToString(blob),
		EncryptedSecret: base64.StdEncoding.EncodeToString(enc),
	})
}

// activationSecret is HMAC-SHA256(key, nonce || 0 || AK name).
func (v tpmVerifier) activationSecret(nonce string, name *tpm2.HashValue) []byte {
	m := hmac.New(sha256.New, v.key)
	m.Write([]byte(nonce))
	m.Write([]byte{0})
	enc, _ := name.Encode()
	m.Write(enc)
	return m.Sum(nil)
}

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// checkEK parses an EK certificate and verifies it chains to the
// configured EK CAs.
func (v tpmVerifier) checkEK(b64 string) (*x509.Certificate, error) {
	der, err := tpmBase64("ek_cert", b64, MaxTPMEKCert)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, tpmUnsupported("ek_cert: %v", err)
	}
	// The TCG EK credential profile's subject alternative name is critical
	// and holds only a directoryName (TPM manufacturer, model, version),
	// which Go's x509 does not handle: accept that one extension, as
	// go-attestation does; any other unhandled critical one still fails.
	var keep []asn1.ObjectIdentifier
	for _, oid := range cert.UnhandledCriticalExtensions {
		if !oid.Equal(oidSubjectAltName) {
			keep = append(keep, oid)
		}
	}
	cert.UnhandledCriticalExtensions = keep
	if v.roots == nil {
		return nil, fmt.Errorf("tpm evidence carries an EK certificate but this broker trusts no EK CA (kbs serve --tpm-ek-ca): %w", spec.ErrIntegrity)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: v.roots, CurrentTime: v.now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("EK certificate (issuer %q) does not chain to a trusted EK CA (kbs serve --tpm-ek-ca): %v: %w", cert.Issuer.String(), err, spec.ErrIntegrity)
	}
	return cert, nil
}

// akName decodes a TPMT_PUBLIC that must be a restricted, fixedTPM
// signing key and returns it with its name.
func akName(b64 string) (tpm2.Public, *tpm2.HashValue, error) {
	raw, err := tpmBase64("ak_tpmt_public", b64, MaxTPMPublicArea)
	if err != nil {
		return tpm2.Public{}, nil, err
	}
	pub, err := tpm2.DecodePublic(raw)
	if err != nil {
		return tpm2.Public{}, nil, tpmUnsupported("ak_tpmt_public: %v", err)
	}
	const need = tpm2.FlagSign | tpm2.FlagRestricted | tpm2.FlagFixedTPM | tpm2.FlagFixedParent | tpm2.FlagSensitiveDataOrigin
	if pub.Attributes&need != need || pub.Attributes&tpm2.FlagDecrypt != 0 {
		return tpm2.Public{}, nil, fmt.Errorf("tpm evidence: ak_tpmt_public is not a restricted signing key generated in and fixed to its TPM (attributes %#x): %w", uint32(pub.Attributes), spec.ErrIntegrity)
	}
	name, err := pub.Name()
	if err != nil || name.Digest == nil {
		return tpm2.Public{}, nil, tpmUnsupported("ak_tpmt_public: no name: %v", err)
	}
	return pub, name.Digest, nil
}

// endorsement checks, when the evidence carries an EK certificate, that
// it chains to a trusted EK CA, that ak_tpmt_public is ak_public and that
// the credential the broker sealed to both for this nonce was activated.
// Claims, when the evidence carries an EK certificate: ek_verified (true
// only then), ek_issuer.
func (v tpmVerifier) endorsement(te *tpmEvidence, akDER []byte, nonce string, c Claims) error {
	if te.EKCert == "" {
		return nil // CoCo's evidence: no claim, the AK pin decides
	}
	c["ek_verified"] = false
	if v.roots == nil {
		return nil
	}
	ek, err := v.checkEK(te.EKCert)
	if err != nil {
		return err
	}
	pub, name, err := akName(te.AKTPMPublic)
	if err != nil {
		return err
	}
	key, err := pub.Key()
	if err != nil {
		return tpmUnsupported("ak_tpmt_public: %v", err)
	}
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil || subtle.ConstantTimeCompare(der, akDER) != 1 {
		return fmt.Errorf("tpm evidence: ak_tpmt_public is not the key of ak_public: %w", spec.ErrIntegrity)
	}
	got, err := tpmBase64("activation", te.Activation, 64)
	if err != nil {
		return fmt.Errorf("tpm evidence: an EK certificate without credential activation (the guest must activate the credential of /auth's challenge): %w", spec.ErrIntegrity)
	}
	if nonce == "" || !hmac.Equal(got, v.activationSecret(nonce, name)) {
		return fmt.Errorf("tpm evidence: the activated credential is not the one sealed to this EK and AK for this session: %w", spec.ErrIntegrity)
	}
	c["ek_verified"] = true
	c["ek_issuer"] = ek.Issuer.String()
	return nil
}

// measuredBoot replays a vm guest's logs against the quoted PCRs and adds
// the claim "boot":
//
//	firmware        the firmware's events (PCRs 0-7): pcr, type, digest, data
//	ima             IMA's measurements covered by the quote (PCR 10): name, digest
//	init            SHA-256 (hex) of /init as IMA measured it ("" when it did not)
//	init_data       the init-data digest coffer's init extended into PCR 8
//	cmdline         the kernel command line it measured into PCR 9, and
//	cmdline_digest  its SHA-256
//
// Evidence without logs (CoCo's attester) gets no "boot" claim. Any log
// that does not replay refuses the evidence (eventlog.ErrReplay).
func (v tpmVerifier) measuredBoot(te *tpmEvidence, pcrs [][]byte, c Claims) error {
	if te.EventLog == "" && te.IMALog == "" && te.InitLog == nil {
		return nil
	}
	fw, err := tpmBase64("event_log", te.EventLog, eventlog.MaxLogBytes)
	if err != nil {
		return err
	}
	fwEvents, err := eventlog.Firmware(fw, pcrs)
	if err != nil {
		return err
	}
	var ima []byte
	if te.IMALog != "" {
		if ima, err = tpmBase64("ima_log", te.IMALog, eventlog.MaxLogBytes); err != nil {
			return err
		}
	}
	imaEntries, err := eventlog.IMA(ima, pcrs[eventlog.IMAPCR])
	if err != nil {
		return err
	}
	if err := eventlog.Init(te.InitLog, pcrs); err != nil {
		return err
	}
	boot := map[string]any{"init": "", "init_data": "", "cmdline": "", "cmdline_digest": ""}
	var fwc, imac []any
	for i, e := range fwEvents {
		if i < maxClaimEvents {
			fwc = append(fwc, map[string]any{"pcr": e.PCR, "type": e.Type, "digest": e.Digest, "data": e.Data})
		}
	}
	for i, e := range imaEntries {
		if e.Name == "/init" && boot["init"] == "" && e.Algo == "sha256" {
			boot["init"] = e.Digest
		}
		if i < maxClaimEvents {
			imac = append(imac, map[string]any{"name": e.Name, "digest": e.Algo + ":" + e.Digest})
		}
	}
	for _, e := range te.InitLog {
		switch e.Event {
		case "init-data":
			boot["init_data"] = e.Digest
		case "cmdline":
			boot["cmdline"], boot["cmdline_digest"] = e.Data, e.Digest
		}
	}
	boot["firmware"], boot["ima"] = fwc, imac
	c["boot"] = boot
	return nil
}
