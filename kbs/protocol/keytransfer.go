package protocol

// SecL key transfer to a TPM (the broker playing Intel SecL's KBS).
//
//	POST /kbs/v1/keys/<uuid>/transfer
//	credentials: an RCAR session cookie or Bearer EAR token from a "tpm" attestation
//	body:  {"binding_key":{"public":"<std b64 TPMT_PUBLIC>",
//	                       "certify_info":"<std b64 TPMS_ATTEST of TPM2_Certify>",
//	                       "signature":"<std b64 TPMT_SIGNATURE by the AK>"}}
//	reply: {"wrapped_key":"<std b64 RSA-OAEP(SHA-256, label \"TPM2\\0\") of the key>",
//	        "transfer_proof":"<ES256 JWS of a KeyTransferProof>"}
//
// The path and the reply are SecL's (pkg/kbs/router/key_transfer.go,
// pkg/model/kbs KeyTransferResponse); the request is coffer's: SecL's KBS
// takes a SAML report its verification service signed, coffer's broker
// takes its own attestation plus the binding key's certification, whose
// qualifying data must be the attestation's report data.

// Key-transfer path parts and constants.
const (
	PathKeyTransfer    = "/kbs/v1/keys/" // + <uuid> + PathTransferSuffix
	PathTransferSuffix = "/transfer"
	// KeyTransferRepo and KeyTransferType name the resources key
	// transfer serves: key <uuid> is the resource KeyTransferRepo/KeyTransferType/<uuid>.
	KeyTransferRepo = "secl"
	KeyTransferType = "keys"
	// TPMOAEPLabel is the OAEP label of keys wrapped to a TPM binding key.
	TPMOAEPLabel = "TPM2\x00"
)

// KeyTransferRequest is the body of a key transfer.
type KeyTransferRequest struct {
	BindingKey TPMBindingKey `json:"binding_key"`
}

// TPMBindingKey is a TPM binding key certified by the attested AK.
type TPMBindingKey struct {
	Public      string `json:"public"`
	CertifyInfo string `json:"certify_info"`
	Signature   string `json:"signature"`
}

// KeyTransferResponse is SecL's key-transfer reply.
type KeyTransferResponse struct {
	WrappedKey string `json:"wrapped_key"`
	// Proof is a compact JWS of a KeyTransferProof (coffer's addition).
	Proof string `json:"transfer_proof,omitempty"`
}

// Transfer proofs (coffer's addition to the reply, ignored by SecL's
// clients): the broker signs, with its token key (ES256, JWS typ
// TransferProofType), which attestation a wrapped key was released to, so
// a host that pins the broker's key accepts only a key that came from the
// transfer it attested for. Anyone can wrap a key to a binding key's
// public part; only the broker can sign this.
const TransferProofType = "coffer-transfer+jwt"

// KeyTransferProof is the signed payload of KeyTransferResponse.Proof.
type KeyTransferProof struct {
	// ReportData is hex of the attestation's report data as the TPM quoted
	// it (the binding key's certification carries it too): it binds the
	// broker's nonce and the binding key.
	ReportData string `json:"report_data"`
	KeyID      string `json:"key_id"`
	// WrappedKeySHA256 is std base64 of SHA-256 of the wrapped key bytes.
	WrappedKeySHA256 string `json:"wrapped_key_sha256"`
	IssuedAt         int64  `json:"iat"`
}
