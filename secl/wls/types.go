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

import "github.com/coffer-dev/coffer/secl/wlsclient"

// The wire vocabulary is package wlsclient's, shared with hosts.
type (
	Image         = wlsclient.Image
	Challenge     = wlsclient.Challenge
	KeyRequest    = wlsclient.KeyRequest
	FlavorKey     = wlsclient.FlavorKey
	KeyURLRequest = wlsclient.KeyURLRequest
	ReturnKey     = wlsclient.ReturnKey
)

// Paths (see wlsclient).
const (
	PathFlavors      = wlsclient.PathFlavors
	PathImages       = wlsclient.PathImages
	FlavorKeySuffix  = wlsclient.FlavorKeySuffix
	PathKeys         = wlsclient.PathKeys
	PathKeyChallenge = wlsclient.PathKeyChallenge
)

// maxBody bounds request bodies and stored image records.
const maxBody = wlsclient.MaxBody
