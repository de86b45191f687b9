// Package spec holds the ocicrypt wire vocabulary: media types, annotation
// keys and the public/private layer option structs. It imports only the
// standard library.
package spec

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
)

// Layer media types.
const (
	MediaTypeLayer                    = "application/vnd.oci.image.layer.v1.tar"
	MediaTypeLayerGzip                = "application/vnd.oci.image.layer.v1.tar+gzip"
	MediaTypeLayerZstd                = "application/vnd.oci.image.layer.v1.tar+zstd"
	MediaTypeLayerNonDistributable    = "application/vnd.oci.image.layer.nondistributable.v1.tar"
	MediaTypeLayerNonDistributableGz  = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
	MediaTypeLayerNonDistributableZst = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
	MediaTypeDockerLayer              = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	MediaTypeDockerForeignLayer       = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

	// EncryptedSuffix is appended to a plain layer media type once encrypted.
	EncryptedSuffix = "+encrypted"
)

// Annotation keys.
const (
	AnnotationPubOpts   = "org.opencontainers.image.enc.pubopts"
	AnnotationKeyPrefix = "org.opencontainers.image.enc.keys."
)

// CipherAES256CTR is the only layer cipher ocicrypt defines.
const CipherAES256CTR = "AES_256_CTR_HMAC_SHA256"

var encryptable = map[string]bool{
	MediaTypeLayer: true, MediaTypeLayerGzip: true, MediaTypeLayerZstd: true,
	MediaTypeLayerNonDistributable: true, MediaTypeLayerNonDistributableGz: true,
	MediaTypeLayerNonDistributableZst: true,
}

// IsEncryptable reports whether an OCI layer of this media type can be
// encrypted (Docker schema 2 layer types must be converted first).
func IsEncryptable(mt string) bool { return encryptable[mt] }

// IsEncrypted reports whether mt is an encrypted OCI layer type.
func IsEncrypted(mt string) bool {
	return strings.HasSuffix(mt, EncryptedSuffix) && encryptable[strings.TrimSuffix(mt, EncryptedSuffix)]
}

// EncryptedMediaType returns the +encrypted form of an OCI layer type.
func EncryptedMediaType(mt string) (string, error) {
	if !encryptable[mt] {
		return "", fmt.Errorf("layer media type %q cannot be encrypted: %w", mt, ErrUnsupported)
	}
	return mt + EncryptedSuffix, nil
}

// DecryptedMediaType strips the +encrypted suffix.
func DecryptedMediaType(mt string) (string, error) {
	if !IsEncrypted(mt) {
		return "", fmt.Errorf("layer media type %q is not an encrypted layer type: %w", mt, ErrUnsupported)
	}
	return strings.TrimSuffix(mt, EncryptedSuffix), nil
}

// PublicOptions is the JSON stored (base64) in the pubopts annotation.
type PublicOptions struct {
	Cipher        string            `json:"cipher"`
	HMAC          []byte            `json:"hmac"`
	CipherOptions map[string][]byte `json:"cipheroptions"`
}

// PrivateOptions is the JSON every key wrapper wraps.
type PrivateOptions struct {
	SymKey        []byte            `json:"symkey"`
	Digest        string            `json:"digest"`
	CipherOptions map[string][]byte `json:"cipheroptions"`
}

// Nonce returns the CTR nonce from the cipher options.
func (p *PrivateOptions) Nonce() []byte { return p.CipherOptions["nonce"] }

// EncodePublic returns the pubopts annotation value.
func EncodePublic(p PublicOptions) string {
	if p.CipherOptions == nil {
		p.CipherOptions = map[string][]byte{}
	}
	b, _ := json.Marshal(p) // cannot fail: only strings, bytes and maps of bytes
	return base64.StdEncoding.EncodeToString(b)
}

// DecodePublic parses a pubopts annotation value.
func DecodePublic(s string) (PublicOptions, error) {
	var p PublicOptions
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return p, fmt.Errorf("pubopts annotation is not base64: %w", ErrIntegrity)
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("pubopts annotation is not valid JSON: %w", ErrIntegrity)
	}
	if p.Cipher != CipherAES256CTR {
		return p, fmt.Errorf("layer cipher %q: %w (only %s)", p.Cipher, ErrUnsupported, CipherAES256CTR)
	}
	if len(p.HMAC) != 32 {
		return p, fmt.Errorf("pubopts hmac has %d bytes, want 32: %w", len(p.HMAC), ErrIntegrity)
	}
	return p, nil
}

// MarshalPrivate serializes privopts for a key wrapper.
func MarshalPrivate(p PrivateOptions) []byte {
	if p.CipherOptions == nil {
		p.CipherOptions = map[string][]byte{}
	}
	b, _ := json.Marshal(p)
	return b
}

// UnmarshalPrivate parses and validates unwrapped privopts.
func UnmarshalPrivate(b []byte) (PrivateOptions, error) {
	var p PrivateOptions
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("unwrapped layer options are not valid JSON: %w", ErrIntegrity)
	}
	if len(p.SymKey) != 32 {
		return p, fmt.Errorf("layer key has %d bytes, want 32: %w", len(p.SymKey), ErrIntegrity)
	}
	if n := len(p.Nonce()); n != 16 {
		return p, fmt.Errorf("layer nonce has %d bytes, want 16: %w", n, ErrIntegrity)
	}
	if !strings.HasPrefix(p.Digest, "sha256:") || len(p.Digest) != len("sha256:")+64 {
		return p, fmt.Errorf("layer options digest %q is not a sha256 digest: %w", p.Digest, ErrIntegrity)
	}
	return p, nil
}

// KeyAnnotations returns the scheme → entries map of a descriptor's
// annotations (entries are the decoded, comma-separated base64 values).
func KeyAnnotations(ann map[string]string) (map[string][][]byte, error) {
	out := map[string][][]byte{}
	for k, v := range ann {
		scheme, ok := strings.CutPrefix(k, AnnotationKeyPrefix)
		if !ok {
			continue
		}
		for _, part := range strings.Split(v, ",") {
			if part == "" {
				continue
			}
			b, err := base64.StdEncoding.DecodeString(part)
			if err != nil {
				return nil, fmt.Errorf("annotation %s holds an entry that is not base64: %w", k, ErrIntegrity)
			}
			out[scheme] = append(out[scheme], b)
		}
	}
	return out, nil
}

// AppendKeyEntry adds one wrapper output to the scheme's annotation value.
func AppendKeyEntry(existing string, entry []byte) string {
	e := base64.StdEncoding.EncodeToString(entry)
	if existing == "" {
		return e
	}
	return existing + "," + e
}
