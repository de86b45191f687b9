// Package protocol holds the wire vocabulary of the Confidential Containers
// KBS "Request-Challenge-Attestation-Response" (RCAR) protocol, version 0.4.0,
// as spoken by trustee's KBS and guest-components' kbs_protocol client.
//
// It is shared by the broker (kbs/server) and the guest-side client
// (agent/client) and has no other coffer dependency. The flow is:
//
//	POST /kbs/v0/auth      Request      → Challenge (+ cookie kbs-session-id)
//	POST /kbs/v0/attest    Attestation  → AttestResponse{Token}
//	GET  /kbs/v0/resource/<repo>/<type>/<tag> → Response (flattened JWE)
//
// A client generates a tee key with GenerateTeeKey, binds it into its evidence
// with ReportDataDigest, and opens the resource with Open. The broker seals
// with Seal. Errors travel as ErrorInfo.
package protocol

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"

	"github.com/coffer-dev/coffer/resource"
)

// Version is the protocol version this package speaks.
const Version = "0.4.0"

// Paths of the RCAR and admin endpoints, relative to the broker URL.
const (
	PathAuth               = "/kbs/v0/auth"
	PathAttest             = "/kbs/v0/attest"
	PathResource           = "/kbs/v0/resource/" // + <repo>/<type>/<tag>
	PathResourcePolicy     = "/kbs/v0/resource-policy"
	PathAttestationPolicy  = "/kbs/v0/attestation-policy"
	PathReferenceValue     = "/kbs/v0/reference-value"
	SessionCookie          = "kbs-session-id"
	ErrorTypePrefix        = "https://github.com/confidential-containers/kbs/errors/"
	NonceSize              = 32 // random bytes in a Challenge nonce
	ContentTypeJSON        = "application/json"
	ContentTypeOctetStream = "application/octet-stream"
	DefaultResourceRepo    = resource.DefaultRepo
	KeyAlgECDHESA256KW     = "ECDH-ES+A256KW"
	KeyAlgRSAOAEP256       = "RSA-OAEP-256"
	KeyAlgRSA15            = "RSA1_5"
	ContentEncA256GCM      = "A256GCM"
)

// Tee names a TEE type as it appears in Request.Tee.
type Tee string

// Tee values known to the reference (kbs-types).
const (
	TeeSample    Tee = "sample"
	TeeSampleDev Tee = "sampledevice"
	TeeTPM       Tee = "tpm"
	TeeSNP       Tee = "snp"
	TeeSEV       Tee = "sev"
	TeeTDX       Tee = "tdx"
	TeeSGX       Tee = "sgx"
	TeeAzSNPvTPM Tee = "az-snp-vtpm"
	TeeAzTDXvTPM Tee = "az-tdx-vtpm"
	TeeSE        Tee = "se"
	TeeCCA       Tee = "cca"
	TeeCSV       Tee = "csv"
	TeeHygonDCU  Tee = "hygon-dcu"
	TeeNvidiaGPU Tee = "nvidia"
)

// Request is the body of POST /kbs/v0/auth.
type Request struct {
	Version     string          `json:"version"`
	Tee         Tee             `json:"tee"`
	ExtraParams json.RawMessage `json:"extra-params"` // any JSON value; the reference client sends ""
}

// Challenge is the answer to a Request: a fresh nonce (standard base64 of
// NonceSize random bytes) that the evidence must bind.
type Challenge struct {
	Nonce       string          `json:"nonce"`
	ExtraParams json.RawMessage `json:"extra-params"`
}

// Attestation is the body of POST /kbs/v0/attest.
type Attestation struct {
	InitData    *InitData         `json:"init-data,omitempty"`
	RuntimeData RuntimeData       `json:"runtime-data"`
	TeeEvidence CompositeEvidence `json:"tee-evidence"`
}

// InitData carries the guest's initdata document (usually TOML).
type InitData struct {
	Format string `json:"format"`
	Body   string `json:"body"`
}

// RuntimeData is what the evidence binds: the challenge nonce and the
// public half of the key the resources will be sealed to.
type RuntimeData struct {
	Nonce     string    `json:"nonce"`
	TeePubKey TeePubKey `json:"tee-pubkey"`
}

// CompositeEvidence is the evidence of the primary TEE plus, as a JSON
// string ("" when absent), evidence of additional devices.
type CompositeEvidence struct {
	PrimaryEvidence    json.RawMessage `json:"primary_evidence"`
	AdditionalEvidence string          `json:"additional_evidence"`
}

// AttestResponse is the body returned by POST /kbs/v0/attest.
type AttestResponse struct {
	Token string `json:"token"`
}

// TeePubKey is the JWK a client sends in RuntimeData. Only the members the
// reference keeps are modelled, so that re-serializing it (for the
// report-data digest) gives the same bytes on both sides.
type TeePubKey struct {
	Kty string `json:"kty"`           // "EC", "RSA" or "AKP"
	Alg string `json:"alg,omitempty"` // key management algorithm the client expects
	Crv string `json:"crv,omitempty"` // EC: "P-256", "P-384", "P-521"
	X   string `json:"x,omitempty"`   // EC, base64url without padding
	Y   string `json:"y,omitempty"`
	N   string `json:"n,omitempty"` // RSA modulus, base64url without padding
	E   string `json:"e,omitempty"` // RSA exponent
	// Pub is an AKP key's public key (kty "AKP", alg ML-KEM-768+A192KW:
	// the 1184-byte ML-KEM-768 encapsulation key), as trustee's prototype
	// models it (kbs_types TeePubKey::AKP).
	Pub string `json:"pub,omitempty"`
}

// Response is a resource sealed to the tee key: a flattened JWE JSON
// serialization, every member base64url without padding. The AAD of the
// content encryption is the ASCII of Protected.
type Response struct {
	Protected    string `json:"protected"`
	EncryptedKey string `json:"encrypted_key"`
	IV           string `json:"iv"`
	Ciphertext   string `json:"ciphertext"`
	Tag          string `json:"tag"`
}

// ErrorInfo is the error body of every KBS endpoint.
type ErrorInfo struct {
	Type   string `json:"type"`
	Detail string `json:"detail"`
}

// Error variants used in ErrorInfo.Type (after ErrorTypePrefix). Where
// trustee's KBS has a variant for the same failure its name is used.
// Status codes follow the reference: 404 for ErrInvalidPath (bad resource
// path, unknown endpoint), 401 for everything an RCAR client may cure by
// attesting again (including ErrPolicyDeny and ErrResourceNotFound); coffer
// adds 400/413 for malformed or oversized bodies and 400/404 on the admin API.
const (
	ErrAuthFailed       = "AttestationError"   // unsupported protocol version in /auth
	ErrAttestFailed     = "AttestationError"   // evidence rejected, bad nonce, bad binding
	ErrSessionNotFound  = "TokenNotFound"      // no usable session cookie or token
	ErrTokenInvalid     = "TokenVerifierError" // bearer token bad signature or expired
	ErrPolicyDeny       = "PolicyDeny"         // the resource policy said no
	ErrResourceNotFound = "ResourceNotFound"   // no such resource
	ErrInvalidPath      = "InvalidRequestPath" // path fails validation or no such endpoint
	ErrInvalidRequest   = "SerdeError"         // malformed JSON, bad body
	ErrPayloadTooLarge  = "PayloadTooLarge"    // body over the limit
	ErrAdminAuth        = "AdminAuthAccess"    // admin token missing or invalid
	ErrPolicyEngine     = "PolicyEngineError"  // policy failed to compile or evaluate
	ErrUnsupportedTee   = "UnsupportedTee"     // tee without a verifier (coffer-specific, so clients can tell it apart)
	ErrTeePubKey        = "JweError"           // tee key not usable for sealing
	ErrResourceExists   = "ResourceExists"     // create-only write (If-None-Match: *) found one (coffer-specific)
	ErrTooManyRequests  = "TooManyRequests"    // per-address limit hit (coffer-specific); see Retry-After
	ErrInternal         = "InternalError"
	ErrUnavailable      = "ServiceUnavailable" // 503: the broker's store is unreachable (coffer-specific); retry, possibly on another replica
)

// NewError returns the ErrorInfo for a variant.
func NewError(variant, detail string) ErrorInfo {
	return ErrorInfo{Type: ErrorTypePrefix + variant, Detail: detail}
}

// Variant returns the variant part of e.Type ("" if it lacks the prefix).
func (e ErrorInfo) Variant() string {
	v, ok := strings.CutPrefix(e.Type, ErrorTypePrefix)
	if !ok {
		return ""
	}
	return v
}

// Error makes ErrorInfo an error.
func (e ErrorInfo) Error() string {
	if v := e.Variant(); v != "" {
		return "kbs: " + v + ": " + e.Detail
	}
	return "kbs: " + e.Type + ": " + e.Detail
}

// ResourceInfo describes a stored resource, never its value: an entry of
// the admin resource list (GET /kbs/v0/resource).
type ResourceInfo struct {
	Path     string    `json:"path"` // repo/type/tag
	Size     int64     `json:"size"`
	Modified time.Time `json:"modified"`
}

// ResourceList is the body of GET /kbs/v0/resource, sorted by path.
type ResourceList struct {
	Resources []ResourceInfo `json:"resources"`
}

// ResourcePath names a resource: kbs:///<repo>/<type>/<tag>. Its home is
// package resource; the alias keeps the broker's vocabulary whole.
type ResourcePath = resource.Path

// ValidSegment reports whether s is an acceptable resource path segment.
func ValidSegment(s string) bool { return resource.ValidSegment(s) }

// ParseResourcePath parses "repo/type/tag" (see resource.Parse).
func ParseResourcePath(s string) (ResourcePath, error) { return resource.Parse(s) }

// ParseKID parses a kbs:/// key id (see resource.ParseKID).
func ParseKID(kid string) (ResourcePath, error) { return resource.ParseKID(kid) }

// RVPSMessage is the reference value provider message of the sample type,
// the body of POST /kbs/v0/reference-value (as kbs-client sends it).
type RVPSMessage struct {
	Version string `json:"version"`
	Type    string `json:"type"`
	Payload string `json:"payload"` // std base64 of {"name":[values]}
}

// NewRVPSMessage builds a sample RVPS message setting name to values.
func NewRVPSMessage(name string, values []string) []byte {
	payload, _ := json.Marshal(map[string][]string{name: values})
	raw, _ := json.Marshal(RVPSMessage{Version: "0.1.0", Type: "sample", Payload: base64.StdEncoding.EncodeToString(payload)})
	return raw
}
