// Package wls is the workload service of the SecL workflow: it stores
// signed image flavors and which flavors belong to which image, and
// brokers a host's key request to the image owner's broker.
//
// API (JSON; admin calls need an Ed25519 admin token as the broker's
// admin API does: Authorization: Bearer <token>):
//
//	POST /wls/flavors                   admin  body: a signed flavor → 201 {"id":…}; create-only (409 if the id is stored)
//	PUT  /wls/flavors/{id}              admin  body: a signed flavor with that id → 200 (replace, audited)
//	GET  /wls/flavors/{id}                     → the signed flavor
//	GET  /wls/flavors                          → {"ids":[…]}
//	POST /wls/images                    admin  {"id":"<uuid>","flavor_ids":["<uuid>",…]} (SecL's ImageInfo) → 201
//	GET  /wls/images/{id}                      → the image
//	GET  /wls/images/{id}/flavor-key           → 200 Challenge: a fresh broker nonce for the host to attest to
//	POST /wls/images/{id}/flavor-key           KeyRequest → 200 FlavorKey (SecL's: the signed flavor plus
//	                                           "key", the image key wrapped to the host's TPM binding key)
//	POST /wls/keys/challenge                   {"key_url":…} → 200 Challenge (for a container layer's key)
//	POST /wls/keys                             KeyURLRequest → 200 ReturnKey {"key":<wrapped>} (SecL's /wls/keys)
//
// A key URL given by a host is served only when its broker is one a stored
// flavor names or one the operator allowed (WithAllowedBrokers): the WLS
// does not call arbitrary addresses for its clients.
//
// The flavor-key exchange is coffer's: SecL's WLS fetches a SAML report
// of the host from its verification service; coffer's host attests to the
// owner's broker itself (through the WLS, which relays the broker's
// nonce, the host's evidence and its certified binding key) so the broker
// verifies a fresh TPM quote.
package wls

import (
	"encoding/json"

	"github.com/coffer-dev/coffer/kbs/protocol"
)

// Paths.
const (
	PathFlavors = "/wls/flavors"
	PathImages  = "/wls/images"
	// FlavorKeySuffix follows /wls/images/{id}.
	FlavorKeySuffix  = "/flavor-key"
	PathKeys         = "/wls/keys"
	PathKeyChallenge = "/wls/keys/challenge"
)

// maxBody bounds request bodies and stored image records.
const maxBody = 256 << 10

// Image is SecL's ImageInfo: an image and its flavors.
type Image struct {
	ID        string   `json:"id"`
	FlavorIDs []string `json:"flavor_ids"`
}

// Challenge is the broker's nonce, relayed to a host, and the broker
// session the host's KeyRequest continues.
type Challenge struct {
	Tee     protocol.Tee `json:"tee"`
	Nonce   string       `json:"nonce"`
	Session string       `json:"session"`
}

// KeyRequest is a host's answer to a Challenge: its attestation (RCAR)
// and its binding key certified by the attested AK.
type KeyRequest struct {
	Session     string                 `json:"session"`
	Attestation protocol.Attestation   `json:"attestation"`
	BindingKey  protocol.TPMBindingKey `json:"binding_key"`
}

// FlavorKey is SecL's flavor-key reply: the signed flavor and the key
// wrapped to the host's binding key.
type FlavorKey struct {
	Flavor    json.RawMessage `json:"flavor"`
	Signature string          `json:"signature"`
	Key       []byte          `json:"key,omitempty"`
	// Proof is the broker's signed KeyTransferProof for Key (coffer's
	// addition): the host accepts Key only with a proof its pinned broker
	// key verifies, for the attestation it made.
	Proof string `json:"transfer_proof,omitempty"`
}

// KeyURLRequest is a host's key request by key URL (a container layer's
// annotation names the key, not the image).
type KeyURLRequest struct {
	KeyURL string `json:"key_url"`
	KeyRequest
}

// ReturnKey is SecL's /wls/keys reply: the key wrapped to the host's
// binding key.
type ReturnKey struct {
	Key   []byte `json:"key"`
	Proof string `json:"transfer_proof,omitempty"` // as FlavorKey.Proof
}
