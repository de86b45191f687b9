package wla_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/kbs/token"
	"github.com/coffer-dev/coffer/secl/wla"
	"github.com/coffer-dev/coffer/secl/wlsclient"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/tpm"
)

// FuzzCheckTransfer: the transfer proof comes from the WLS (hostile).
// Oracle: only the proof the pinned broker key signed for this attestation,
// key id and wrapped bytes is accepted; everything else fails with
// ErrIntegrity, never a panic.
func FuzzCheckTransfer(f *testing.F) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	signer, _ := token.NewSigner(k, "", 0)
	_, tk, _ := protocol.GenerateTeeKey()
	kr := &wlsclient.KeyRequest{Attestation: protocol.Attestation{RuntimeData: protocol.RuntimeData{Nonce: "bm9uY2U=", TeePubKey: tk}}}
	digest, _ := protocol.ReportDataDigest(kr.Attestation.RuntimeData.Nonce, tk, "")
	rd := hex.EncodeToString(protocol.ReportData(digest, tpm.ReportDataSize))
	wrapped := []byte("wrapped key bytes")
	const keyID = "2b7a3e1c-6a2e-4b8e-9c1f-0d4f5e6a7b8c"
	wd := sha256.Sum256(wrapped)
	now := time.Now()
	payload, _ := json.Marshal(protocol.KeyTransferProof{ReportData: rd, KeyID: keyID, WrappedKeySHA256: base64.StdEncoding.EncodeToString(wd[:]), IssuedAt: now.Unix()})
	good, _ := signer.SignJWS(protocol.TransferProofType, payload)
	other, _ := signer.SignJWS(protocol.TransferProofType, []byte(`{"report_data":"00","key_id":"x"}`))
	for _, s := range []string{good, other, "", "a.b.c", good + "x", good[:len(good)-3], "eyJhbGciOiJub25lIn0.e30."} {
		f.Add(s)
	}
	keys := []*ecdsa.PublicKey{signer.PublicKey()}
	f.Fuzz(func(t *testing.T, proof string) {
		fuzzbound.Limit(t, fuzzbound.Default)
		err := wla.CheckTransfer(proof, keys, kr, keyID, wrapped, now)
		if err == nil && proof != good {
			// ES256 signatures are not unique (s and n-s): a different proof is
			// fine only if it still says exactly what the good one says
			p, verr := token.VerifyJWS(proof, protocol.TransferProofType, keys)
			if verr != nil || string(p) != string(payload) {
				t.Fatalf("accepted a proof the broker did not sign for this transfer: %q", proof)
			}
		}
		if err != nil && !errors.Is(err, spec.ErrIntegrity) {
			t.Fatalf("err = %v, want ErrIntegrity", err)
		}
	})
}
