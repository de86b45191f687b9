// Package wla is the host side of the SecL workflow (SecL's Workload
// Agent): it proves the host to the image owner's broker through the
// workload service (a TPM quote over the broker's nonce, and the TPM
// binding key certified by the same AK), unbinds the image key inside the
// TPM, and decrypts the image. The key exists only in memory, for as long
// as the decryption runs; a restart means a new transfer with a fresh
// attestation.
package wla

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/coffer-dev/coffer/filecrypt"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/kbs/token"
	"github.com/coffer-dev/coffer/secl/flavor"
	"github.com/coffer-dev/coffer/secl/wlsclient"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/tpm"
)

// Prove answers a broker challenge with t: the binding key is the tee key
// of the attestation (so the quote's report data binds it), the quote
// covers the nonce and that key, and the binding key's certification
// carries the same report data, so the broker can tie all three together.
func Prove(ctx context.Context, t *tpm.TPM, ch *wlsclient.Challenge) (*wlsclient.KeyRequest, error) {
	if ch.Tee != protocol.TeeTPM {
		return nil, fmt.Errorf("wla: challenge for tee %q, this host attests with a TPM: %w", ch.Tee, spec.ErrUnsupported)
	}
	pub, err := t.BindingPublic(ctx)
	if err != nil {
		return nil, err
	}
	jwk, err := protocol.PublicTeeKey(pub)
	if err != nil {
		return nil, err
	}
	digest, err := protocol.ReportDataDigest(ch.Nonce, jwk, "")
	if err != nil {
		return nil, err
	}
	ev, err := t.Quote(ctx, digest)
	if err != nil {
		return nil, err
	}
	primary, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	bk, err := t.CertifyBindingKey(ctx, protocol.ReportData(digest, tpm.ReportDataSize))
	if err != nil {
		return nil, err
	}
	b64 := base64.StdEncoding.EncodeToString
	return &wlsclient.KeyRequest{
		Session: ch.Session,
		Attestation: protocol.Attestation{
			RuntimeData: protocol.RuntimeData{Nonce: ch.Nonce, TeePubKey: jwk},
			TeeEvidence: protocol.CompositeEvidence{PrimaryEvidence: primary, AdditionalEvidence: ""},
		},
		BindingKey: protocol.TPMBindingKey{Public: b64(bk.Public), CertifyInfo: b64(bk.CertifyInfo), Signature: b64(bk.Signature)},
	}, nil
}

// ErrNoTrustAnchor: the host has no anchor to check what it receives
// against (the flavor signer certificates, the broker's transfer key, the
// flavor it expects); it refuses rather than trust the network.
var ErrNoTrustAnchor = fmt.Errorf("wla: no trust anchor configured: %w", spec.ErrUnsupported)

// MaxProofAge bounds how old a transfer proof may be (by its iat against
// the host's clock; ProofSkew in the future): a relay that recorded a
// genuine release cannot replay it to this host much later (after the
// owner revoked it) by handing it the old nonce again.
const (
	MaxProofAge = 10 * time.Minute
	ProofSkew   = 2 * time.Minute
)

// CheckTransfer accepts wrapped only with the broker's transfer proof for
// it: signed by one of brokerKeys (pinned by the host), for the
// attestation kr carried (its report data binds the broker's nonce and
// the binding key), for key keyID, over exactly these wrapped bytes,
// issued within MaxProofAge of now. A key wrapped by anyone else (a fake
// WLS, a relay) to this host's binding key has no such proof.
func CheckTransfer(proof string, brokerKeys []*ecdsa.PublicKey, kr *wlsclient.KeyRequest, keyID string, wrapped []byte, now time.Time) error {
	if len(brokerKeys) == 0 {
		return fmt.Errorf("%w: no broker transfer key pinned", ErrNoTrustAnchor)
	}
	if proof == "" {
		return fmt.Errorf("wla: the key came without the broker's transfer proof (a broker too old, or not the broker: refused): %w", spec.ErrIntegrity)
	}
	payload, err := token.VerifyJWS(proof, protocol.TransferProofType, brokerKeys)
	if err != nil {
		return fmt.Errorf("wla: broker transfer proof: %w", err)
	}
	var p protocol.KeyTransferProof
	if err := json.Unmarshal(payload, &p); err != nil {
		return fmt.Errorf("wla: broker transfer proof unreadable: %w", spec.ErrIntegrity)
	}
	digest, err := protocol.ReportDataDigest(kr.Attestation.RuntimeData.Nonce, kr.Attestation.RuntimeData.TeePubKey, "")
	if err != nil {
		return err
	}
	rd := hex.EncodeToString(protocol.ReportData(digest, tpm.ReportDataSize))
	wd := sha256.Sum256(wrapped)
	switch {
	case p.ReportData != rd:
		return fmt.Errorf("wla: the broker released this key to another attestation than this host's: %w", spec.ErrIntegrity)
	case p.KeyID != keyID:
		return fmt.Errorf("wla: the broker released key %q, the flavor names %q: %w", p.KeyID, keyID, spec.ErrIntegrity)
	case p.WrappedKeySHA256 != base64.StdEncoding.EncodeToString(wd[:]):
		return fmt.Errorf("wla: the wrapped key is not the one the broker released: %w", spec.ErrIntegrity)
	case now.Sub(time.Unix(p.IssuedAt, 0)) > MaxProofAge || time.Unix(p.IssuedAt, 0).Sub(now) > ProofSkew:
		return fmt.Errorf("wla: the broker's transfer proof was issued at %s, not now (a replayed release, or a clock off by more than %v): %w",
			time.Unix(p.IssuedAt, 0).UTC().Format(time.RFC3339), ProofSkew, spec.ErrIntegrity)
	}
	return nil
}

// Trust is what a host checks a key release against.
type Trust struct {
	Signers    []*x509.Certificate // flavor signers (required for flavors)
	BrokerKeys []*ecdsa.PublicKey  // the brokers' transfer keys (required)
	// The flavor the host expects for the image (at least one is required
	// for flavors): a relay answering with another image's flavor is refused.
	FlavorID, Label string
}

func (tr Trust) checkFlavor(f *flavor.Flavor) error {
	if tr.FlavorID == "" && tr.Label == "" {
		return fmt.Errorf("%w: no expected flavor id or label", ErrNoTrustAnchor)
	}
	if tr.FlavorID != "" && f.Meta.ID != tr.FlavorID {
		return fmt.Errorf("wla: got flavor %s, this host expects flavor %s for the image: %w", f.Meta.ID, tr.FlavorID, spec.ErrIntegrity)
	}
	if tr.Label != "" && f.Meta.Description.Label != tr.Label {
		return fmt.Errorf("wla: got flavor labelled %q, this host expects %q for the image: %w", f.Meta.Description.Label, tr.Label, spec.ErrIntegrity)
	}
	return nil
}

// A busy workload service or broker is asked again this many times in all,
// waiting busyBackoff longer each time.
const (
	busyAttempts = 4
	busyBackoff  = 500 * time.Millisecond
)

// requestKey is one challenge, proof and flavor-key request.
func requestKey(ctx context.Context, c *wlsclient.Client, t *tpm.TPM, id string) (*wlsclient.KeyRequest, *wlsclient.FlavorKey, error) {
	ch, err := c.Challenge(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	kr, err := Prove(ctx, t, ch)
	if err != nil {
		return nil, nil, err
	}
	fk, err := c.FlavorKey(ctx, id, *kr)
	if err != nil {
		return nil, nil, err
	}
	return kr, fk, nil
}

// FetchKey gets image id's flavor and key through the workload service,
// verifies the flavor (signers, expected id/label), the broker's transfer
// proof, and unbinds the key in t. The caller must clear the key.
func FetchKey(ctx context.Context, c *wlsclient.Client, t *tpm.TPM, id string, tr Trust) (*flavor.Flavor, []byte, error) {
	if len(tr.Signers) == 0 {
		return nil, nil, fmt.Errorf("%w: no flavor signer certificate", ErrNoTrustAnchor)
	}
	if len(tr.BrokerKeys) == 0 {
		return nil, nil, fmt.Errorf("%w: no broker transfer key pinned", ErrNoTrustAnchor)
	}
	if tr.FlavorID == "" && tr.Label == "" {
		return nil, nil, fmt.Errorf("%w: no expected flavor id or label", ErrNoTrustAnchor)
	}
	var (
		kr *wlsclient.KeyRequest
		fk *wlsclient.FlavorKey
	)
	for attempt := 1; ; attempt++ {
		var err error
		if kr, fk, err = requestKey(ctx, c, t, id); err == nil {
			break
		}
		// A busy answer (429: the workload service's gate or the broker's
		// rate limit) is transient: a new challenge, a new proof, a while
		// later. Anything else ends the fetch.
		var be *protocol.BrokerError
		if !errors.As(err, &be) || be.Status != http.StatusTooManyRequests || attempt == busyAttempts {
			return nil, nil, err
		}
		select {
		case <-time.After(time.Duration(attempt) * busyBackoff):
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
	doc, err := json.Marshal(flavor.Signed{Flavor: fk.Flavor, Signature: fk.Signature})
	if err != nil {
		return nil, nil, err
	}
	f, err := flavor.Verify(doc, tr.Signers)
	if err != nil {
		return nil, nil, err
	}
	if err := tr.checkFlavor(f); err != nil {
		return nil, nil, err
	}
	if f.Encryption == nil {
		return nil, nil, fmt.Errorf("wla: flavor %s names no key: %w", f.Meta.ID, spec.ErrUnsupported)
	}
	_, keyID, err := flavor.ParseKeyURL(f.Encryption.KeyURL)
	if err != nil {
		return nil, nil, fmt.Errorf("wla: flavor %s: %w", f.Meta.ID, err)
	}
	if err := CheckTransfer(fk.Proof, tr.BrokerKeys, kr, keyID, fk.Key, time.Now()); err != nil {
		return nil, nil, err
	}
	key, err := t.Unbind(ctx, fk.Key)
	if err != nil {
		return nil, nil, err
	}
	return f, key, nil
}

// DecryptRequest says what DecryptImage does.
type DecryptRequest struct {
	WLS     string   // workload service URL (https; http only on loopback)
	ImageID string   // the image
	TPM     *tpm.TPM // this host's TPM, or nil to open TPMAddr
	TPMAddr string   // tpm.Open's address when TPM is nil ("" = /dev/tpmrm0)
	Input   string   // the encrypted image file
	Output  string   // where the plaintext goes (committed only when complete and authentic)
	Trust   Trust    // required: flavor signers, broker keys, the expected flavor
	// LoopbackHTTP allows an http:// WLS on a loopback address (tests and
	// demos only); otherwise the WLS must be https.
	LoopbackHTTP bool
	HTTP         *http.Client // default: a client with a 2-minute timeout
}

// DecryptImage fetches the image key (FetchKey), checks that Input is
// the file the flavor names (SHA-384) and decrypts it to Output, which
// appears only once the whole file authenticated. It returns the flavor.
func DecryptImage(ctx context.Context, r DecryptRequest) (*flavor.Flavor, error) {
	if r.WLS == "" || r.ImageID == "" || r.Input == "" || r.Output == "" {
		return nil, errors.New("wla: WLS, image id, input and output are required")
	}
	if err := wlsclient.CheckURL(r.WLS, r.LoopbackHTTP); err != nil {
		return nil, fmt.Errorf("wla: %w", err)
	}
	if r.TPM == nil {
		t, err := tpm.Open(ctx, r.TPMAddr)
		if err != nil {
			return nil, fmt.Errorf("wla: %w", err)
		}
		defer t.Close()
		r.TPM = t
	}
	c := wlsclient.NewClient(r.WLS, nil, r.HTTP)
	f, key, err := FetchKey(ctx, c, r.TPM, r.ImageID, r.Trust)
	if err != nil {
		return nil, fmt.Errorf("wla: image %s: %w", r.ImageID, err)
	}
	defer clear(key)
	if f.Meta.Description.FlavorPart != flavor.PartImage || f.Encryption == nil || f.Encryption.Digest == "" {
		return nil, fmt.Errorf("wla: image %s: flavor %s is not an encrypted file image with a digest: %w", r.ImageID, f.Meta.ID, spec.ErrUnsupported)
	}
	d, _ := base64.StdEncoding.DecodeString(f.Encryption.Digest) // Check validated it
	if _, err := filecrypt.DecryptFile(ctx, r.Input, r.Output, key, filecrypt.WithDigest(d)); err != nil {
		return nil, fmt.Errorf("wla: %w", err)
	}
	return f, nil
}

// LoadBrokerKeys reads the brokers' transfer keys a host pins: PEM
// "PUBLIC KEY" (the public part of the broker's --token-key) or
// "CERTIFICATE" files.
func LoadBrokerKeys(paths ...string) ([]*ecdsa.PublicKey, error) {
	var keys []*ecdsa.PublicKey
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("broker key: %w", err)
		}
		k, err := token.LoadVerifyKey(b)
		if err != nil {
			return nil, fmt.Errorf("broker key %s: %w", p, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}
