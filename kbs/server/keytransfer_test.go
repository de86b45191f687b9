package server_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/coffer-dev/coffer/kbs/protocol"
)

// Key transfer to a TPM needs a tpm attestation: an affirming sample-TEE
// session, a caller with no session, a bad path and a malformed binding
// key are refused before any key is read. (The TPM cases run against
// swtpm in secl/wla.)
func TestKeyTransferRefusals(t *testing.T) {
	t.Parallel()
	b := ready(t)
	b.SetResource(t, "secl/keys/2b7a3e1c-6a2e-4b8e-9c1f-0d4f5e6a7b8c", make([]byte, 32))
	body, _ := json.Marshal(protocol.KeyTransferRequest{BindingKey: protocol.TPMBindingKey{Public: "AA==", CertifyInfo: "AA==", Signature: "AA=="}})
	path := protocol.PathKeyTransfer + "2b7a3e1c-6a2e-4b8e-9c1f-0d4f5e6a7b8c" + protocol.PathTransferSuffix

	anon := newRCAR(t, b.URL)
	wantError(t, anon.do(http.MethodPost, path, body, nil), http.StatusUnauthorized, protocol.ErrSessionNotFound, "cookie")

	c := newRCAR(t, b.URL)
	c.handshake() // sample TEE, affirming
	wantError(t, c.do(http.MethodPost, path, body, nil), http.StatusUnauthorized, protocol.ErrPolicyDeny, "needs a tpm attestation")
	wantError(t, c.do(http.MethodPost, protocol.PathKeyTransfer+"../x/transfer", body, nil), http.StatusNotFound, protocol.ErrInvalidPath, "invalid key transfer path")
	wantError(t, c.do(http.MethodPost, protocol.PathKeyTransfer+"x", body, nil), http.StatusNotFound, protocol.ErrInvalidPath, "invalid key transfer path")
	if r := c.do(http.MethodGet, path, nil, nil); r.code != http.StatusMethodNotAllowed {
		t.Errorf("GET: HTTP %d, want 405", r.code)
	}
}
