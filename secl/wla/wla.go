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
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/coffer-dev/coffer/filecrypt"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/secl/flavor"
	"github.com/coffer-dev/coffer/secl/wls"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/tpm"
)

// Prove answers a broker challenge with t: the binding key is the tee key
// of the attestation (so the quote's report data binds it), the quote
// covers the nonce and that key, and the binding key's certification
// carries the same report data, so the broker can tie all three together.
func Prove(ctx context.Context, t *tpm.TPM, ch *wls.Challenge) (*wls.KeyRequest, error) {
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
	return &wls.KeyRequest{
		Session: ch.Session,
		Attestation: protocol.Attestation{
			RuntimeData: protocol.RuntimeData{Nonce: ch.Nonce, TeePubKey: jwk},
			TeeEvidence: protocol.CompositeEvidence{PrimaryEvidence: primary, AdditionalEvidence: ""},
		},
		BindingKey: protocol.TPMBindingKey{Public: b64(bk.Public), CertifyInfo: b64(bk.CertifyInfo), Signature: b64(bk.Signature)},
	}, nil
}

// FetchKey gets image id's signed flavor document and key through the
// workload service and unbinds the key in t. The caller must clear the key.
func FetchKey(ctx context.Context, c *wls.Client, t *tpm.TPM, id string) (doc, key []byte, err error) {
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
	doc, err = json.Marshal(flavor.Signed{Flavor: fk.Flavor, Signature: fk.Signature})
	if err != nil {
		return nil, nil, err
	}
	key, err = t.Unbind(ctx, fk.Key)
	if err != nil {
		return nil, nil, err
	}
	return doc, key, nil
}

// DecryptRequest says what DecryptImage does.
type DecryptRequest struct {
	WLS     string              // workload service URL
	ImageID string              // the image
	TPM     *tpm.TPM            // this host's TPM, or nil to open TPMAddr
	TPMAddr string              // tpm.Open's address when TPM is nil ("" = /dev/tpmrm0)
	Input   string              // the encrypted image file
	Output  string              // where the plaintext goes (committed only when complete and authentic)
	Signers []*x509.Certificate // when set, the flavor must verify with one of them too (the WLS already checked it)
	HTTP    *http.Client        // default: a client with a 2-minute timeout
}

// DecryptImage fetches the image key (FetchKey), checks that Input is
// the file the flavor names (SHA-384) and decrypts it to Output, which
// appears only once the whole file authenticated. It returns the flavor.
func DecryptImage(ctx context.Context, r DecryptRequest) (*flavor.Flavor, error) {
	if r.WLS == "" || r.ImageID == "" || r.Input == "" || r.Output == "" {
		return nil, errors.New("wla: WLS, image id, input and output are required")
	}
	if r.TPM == nil {
		t, err := tpm.Open(ctx, r.TPMAddr)
		if err != nil {
			return nil, fmt.Errorf("wla: %w", err)
		}
		defer t.Close()
		r.TPM = t
	}
	c := wls.NewClient(r.WLS, nil, r.HTTP)
	doc, key, err := FetchKey(ctx, c, r.TPM, r.ImageID)
	if err != nil {
		return nil, fmt.Errorf("wla: image %s: %w", r.ImageID, err)
	}
	defer clear(key)
	var f *flavor.Flavor
	if len(r.Signers) > 0 {
		f, err = flavor.Verify(doc, r.Signers)
	} else {
		_, f, err = flavor.Parse(doc)
	}
	if err != nil {
		return nil, fmt.Errorf("wla: image %s: %w", r.ImageID, err)
	}
	if f.Meta.Description.FlavorPart != flavor.PartImage || f.Encryption == nil {
		return nil, fmt.Errorf("wla: image %s: flavor %s is not an encrypted file image: %w", r.ImageID, f.Meta.ID, spec.ErrUnsupported)
	}
	var opts []filecrypt.Option
	if f.Encryption.Digest != "" {
		d, _ := base64.StdEncoding.DecodeString(f.Encryption.Digest) // Check validated it
		opts = append(opts, filecrypt.WithDigest(d))
	}
	if _, err := filecrypt.DecryptFile(ctx, r.Input, r.Output, key, opts...); err != nil {
		return nil, fmt.Errorf("wla: %w", err)
	}
	return f, nil
}
