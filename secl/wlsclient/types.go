// Package wlsclient is the client of coffer's SecL workload service
// (package wls, its server) and their shared wire vocabulary: what a host
// (secl/wla) and an operator link, without the service's store, broker
// relay or rate limits. The API is listed in package wls.
package wlsclient

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

// MaxBody bounds request bodies and stored image records (a reply is at
// most MaxBody plus a signed flavor).
const MaxBody = 256 << 10

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
