package imagepolicy

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
)

// Simple signing (containers/image) and cosign vocabulary.
const (
	// CosignSignatureType is critical.type of a cosign / sigstore payload.
	CosignSignatureType = "cosign container image signature"
	// AtomicSignatureType is critical.type of a GPG simple signing payload.
	AtomicSignatureType = "atomic container signature"
	// SimpleSigningMediaType is the media type of a cosign signature layer.
	SimpleSigningMediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
	// CosignSignatureAnnotation holds the base64 signature of the layer's payload.
	CosignSignatureAnnotation = "dev.cosignproject.cosign/signature"

	maxPayload    = 64 << 10
	maxSignatures = 64
)

// Payload is a simple signing payload: what a signature signs.
type Payload struct {
	Critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
	Optional map[string]any `json:"optional"`
}

// NewPayload is the payload signing digest as identity.
func NewPayload(identity string, digest v1.Hash, typ string) Payload {
	var p Payload
	p.Critical.Identity.DockerReference = identity
	p.Critical.Image.DockerManifestDigest = digest.String()
	p.Critical.Type = typ
	return p
}

// ParsePayload parses a payload strictly: critical must hold exactly
// identity, image and type (unknown critical fields are refused, as
// containers/image does); optional is free-form.
func ParsePayload(data []byte, wantType string) (Payload, error) {
	var p Payload
	if len(data) > maxPayload {
		return p, fmt.Errorf("signature payload of %d bytes: %w", len(data), spec.ErrUnsupported)
	}
	if err := checkDepth(data, maxPolicyDepth); err != nil {
		return p, err
	}
	var outer struct {
		Critical json.RawMessage `json:"critical"`
		Optional map[string]any  `json:"optional"`
	}
	if err := json.Unmarshal(data, &outer); err != nil {
		return p, fmt.Errorf("signature payload: %v: %w", err, spec.ErrUnsupported)
	}
	if err := strictDecode(outer.Critical, &p.Critical); err != nil {
		return p, fmt.Errorf("signature payload critical: %w", err)
	}
	p.Optional = outer.Optional
	switch {
	case p.Critical.Type != wantType:
		return p, fmt.Errorf("signature payload type %q, want %q: %w", p.Critical.Type, wantType, spec.ErrUnsupported)
	case p.Critical.Identity.DockerReference == "":
		return p, fmt.Errorf("signature payload has no docker-reference: %w", spec.ErrUnsupported)
	}
	if _, err := v1.NewHash(p.Critical.Image.DockerManifestDigest); err != nil {
		return p, fmt.Errorf("signature payload digest: %v: %w", err, spec.ErrUnsupported)
	}
	return p, nil
}

// Signature is one signature read from wherever a scheme stores them.
type Signature struct {
	Payload []byte // signed bytes (sigstore) or the signed OpenPGP message (signedBy)
	Sig     []byte // the signature (sigstore); nil for OpenPGP messages
	Source  string // where it was read, for messages
	// Certificate, Chain and SET are cosign's keyless / transparency-log
	// annotations (PEM, PEM, bundle JSON), when present.
	Certificate, Chain, SET string
	// Bundle is a sigstore bundle (cosign v3); Payload and Sig are then
	// unset.
	Bundle []byte
}

// SignatureVerifier verifies one signature with a requirement's keys and
// returns the payload it vouches for: sigstore public keys and GPG
// keyrings sit behind it.
type SignatureVerifier interface {
	VerifySignature(s Signature) (payload []byte, err error)
}

// verify checks img against a signedBy or sigstoreSigned requirement: at
// least one signature must verify, sign img's digest and carry an identity
// the signedIdentity rule accepts.
func (r *Requirement) verify(ctx context.Context, img Image) (string, error) {
	var (
		v        SignatureVerifier
		sigs     []Signature
		wantType string
		err      error
	)
	switch r.Type {
	case TypeSigstoreSigned:
		wantType = CosignSignatureType
		var sv *sigstoreVerifiers
		if sv, err = r.sigstoreVerifiers(); err == nil {
			sv.ctx, v = ctx, sv
			if sigs, err = SigstoreSignatures(ctx, img.Ref, img.Digest, img.transport...); err == nil {
				var bundles []Signature
				bundles, err = BundleSignatures(ctx, img.Ref, img.Digest, img.transport...)
				sigs = append(sigs, bundles...)
			}
		}
	case TypeSignedBy:
		wantType = AtomicSignatureType
		if v, err = newGPGVerifier(r.keys); err == nil {
			sigs, err = lookasideSignatures(ctx, img)
		}
	}
	if err != nil {
		return "", err
	}
	return r.accept(v, sigs, img, wantType)
}

// accept returns the first signature of sigs that v verifies, that signs
// img's digest with the payload type wanted and whose identity the
// signedIdentity rule accepts; else an error listing why each failed.
func (r *Requirement) accept(v SignatureVerifier, sigs []Signature, img Image, wantType string) (string, error) {
	if len(sigs) == 0 {
		return "", fmt.Errorf("no signature found for %s: %w", img.Digest, spec.ErrPolicyDenied)
	}
	var reasons []string
	for _, s := range sigs {
		if s.Bundle != nil {
			desc, err := r.acceptBundle(v, s, img)
			if err != nil {
				reasons = append(reasons, s.Source+": "+err.Error())
				continue
			}
			return desc, nil
		}
		payload, err := v.VerifySignature(s)
		if err != nil {
			reasons = append(reasons, s.Source+": "+err.Error())
			continue
		}
		p, err := ParsePayload(payload, wantType)
		if err != nil {
			reasons = append(reasons, s.Source+": "+err.Error())
			continue
		}
		if p.Critical.Image.DockerManifestDigest != img.Digest.String() {
			reasons = append(reasons, fmt.Sprintf("%s: signs %s, not %s", s.Source, p.Critical.Image.DockerManifestDigest, img.Digest))
			continue
		}
		if err := r.SignedIdentity.match(img.Ref, p.Critical.Identity.DockerReference); err != nil {
			reasons = append(reasons, s.Source+": "+err.Error())
			continue
		}
		return fmt.Sprintf("%s signs %s as %s", s.Source, img.Digest, p.Critical.Identity.DockerReference), nil
	}
	return "", fmt.Errorf("no valid signature for %s among %d: %s: %w", img.Digest, len(sigs), strings.Join(reasons, "; "), spec.ErrPolicyDenied)
}

// SignatureTag is the tag cosign stores the signatures of digest under.
func SignatureTag(digest v1.Hash) string { return digest.Algorithm + "-" + digest.Hex + ".sig" }

// CosignReferrerType is the artifactType of a cosign signature stored as
// an OCI 1.1 referrer (cosign sign --registry-referrers-mode=oci-1-1).
const CosignReferrerType = "application/vnd.dev.cosign.artifact.sig.v1+json"

// maxReferrerSigs bounds the referrer manifests read for one digest.
const maxReferrerSigs = 16

// SigstoreSignatures reads the cosign signatures of digest stored next to
// ref: the "sha256-<hex>.sig" tag of its repository (registry or OCI
// layout), and, in a registry, OCI 1.1 referrers of artifactType
// CosignReferrerType. None stored is no error.
func SigstoreSignatures(ctx context.Context, ref transport.Reference, digest v1.Hash, topts ...transport.Option) ([]Signature, error) {
	var out []Signature
	if sref, ok := signatureRef(ref, digest); ok {
		sigs, err := signaturesAt(ctx, sref, topts)
		if err != nil {
			return nil, err
		}
		out = append(out, sigs...)
	}
	descs, rerr := transport.Referrers(ctx, ref, digest, CosignReferrerType, topts...)
	if rerr != nil && !errors.Is(rerr, spec.ErrNotFound) && len(out) == 0 {
		return nil, rerr
	}
	n, isDocker := transport.DockerName(ref)
	for i, d := range descs {
		if i == maxReferrerSigs || !isDocker {
			break
		}
		rref, err := transport.Parse("docker://" + n.Context().Digest(d.Digest.String()).String())
		if err != nil {
			continue
		}
		sigs, err := signaturesAt(ctx, rref, topts)
		if err != nil {
			return nil, err
		}
		out = append(out, sigs...)
	}
	if len(out) > maxSignatures {
		out = out[:maxSignatures]
	}
	return out, nil
}

// signaturesAt reads the signature layers of the cosign signature image
// at sref (none there: none).
func signaturesAt(ctx context.Context, sref transport.Reference, topts []transport.Option) ([]Signature, error) {
	a, closeFn, err := transport.Read(ctx, sref, topts...)
	if errors.Is(err, spec.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading signatures %s: %w", sref, err)
	}
	defer closeFn()
	if a.Image == nil {
		return nil, fmt.Errorf("signatures %s: not an image manifest: %w", sref, spec.ErrUnsupported)
	}
	m, err := a.Image.Manifest()
	if err != nil {
		return nil, fmt.Errorf("signatures %s: %w", sref, err)
	}
	var out []Signature
	for i, d := range m.Layers {
		if len(out) >= maxSignatures {
			break
		}
		b64, ok := d.Annotations[CosignSignatureAnnotation]
		if string(d.MediaType) != SimpleSigningMediaType || !ok || d.Size > maxPayload || d.Size < 0 {
			continue
		}
		sig, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			continue
		}
		payload, err := readBlob(a.Image, d)
		if err != nil {
			return nil, fmt.Errorf("signatures %s layer %d: %w", sref, i, err)
		}
		out = append(out, Signature{Payload: payload, Sig: sig, Source: fmt.Sprintf("%s#%d", sref, i),
			Certificate: d.Annotations[CertificateAnnotation], Chain: d.Annotations[ChainAnnotation], SET: d.Annotations[BundleAnnotation]})
	}
	return out, nil
}

// signatureRef is where the cosign signatures of digest live for ref.
func signatureRef(ref transport.Reference, digest v1.Hash) (transport.Reference, bool) {
	var s string
	if n, ok := transport.DockerName(ref); ok {
		s = "docker://" + n.Context().Tag(SignatureTag(digest)).String()
	} else if ref.Transport() == "oci" {
		s = "oci:" + ref.LocalPath() + ":" + SignatureTag(digest)
	} else {
		return nil, false
	}
	r, err := transport.Parse(s)
	return r, err == nil
}

// readBlob reads a small blob and checks it against its descriptor.
func readBlob(img v1.Image, d v1.Descriptor) ([]byte, error) {
	l, err := img.LayerByDigest(d.Digest)
	if err != nil {
		return nil, err
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, d.Size+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) != d.Size || sha256Hash(b) != d.Digest {
		return nil, fmt.Errorf("blob %s does not match its descriptor: %w", d.Digest, spec.ErrIntegrity)
	}
	return b, nil
}

// ParsePublicKey parses one PEM "PUBLIC KEY" (PKIX) block.
func ParsePublicKey(data []byte) (crypto.PublicKey, error) {
	if len(data) > maxKeySize {
		return nil, fmt.Errorf("public key: too large: %w", spec.ErrUnsupported)
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("public key: want a PEM PUBLIC KEY block: %w", spec.ErrUnsupported)
	}
	pub, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("public key: %v: %w", err, spec.ErrUnsupported)
	}
	switch pub.(type) {
	case *ecdsa.PublicKey, *rsa.PublicKey, ed25519.PublicKey:
		return pub, nil
	}
	return nil, fmt.Errorf("public key: type %T: %w", pub, spec.ErrUnsupported)
}

// verifyRaw verifies sig over msg the way cosign signs with a key:
// ECDSA ASN.1 and RSA PKCS#1 v1.5 over SHA-256, Ed25519 over the message.
func verifyRaw(k crypto.PublicKey, msg, sig []byte) bool {
	sum := sha256.Sum256(msg)
	switch k := k.(type) {
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(k, sum[:], sig)
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(k, crypto.SHA256, sum[:], sig) == nil
	case ed25519.PublicKey:
		return ed25519.Verify(k, msg, sig)
	}
	return false
}

// match applies the signedIdentity rule: ref is the image as pulled,
// signed the payload's docker-reference.
func (id *IdentityRule) match(ref transport.Reference, signed string) error {
	sig, err := name.ParseReference(signed)
	if err != nil {
		return fmt.Errorf("signed identity %q: %v", signed, err)
	}
	sigTagged := hasTagOrDigest(signed)
	img, _ := transport.DockerName(ref)
	switch id.Type {
	case IdentityExactReference:
		want, _ := name.ParseReference(id.DockerReference)
		if sigTagged && sig.Name() == want.Name() {
			return nil
		}
		return fmt.Errorf("signed identity %s is not %s", signed, id.DockerReference)
	case IdentityExactRepository:
		want, _ := name.NewRepository(id.DockerRepository)
		if sig.Context().Name() == want.Name() {
			return nil
		}
		return fmt.Errorf("signed identity %s is not in %s", signed, id.DockerRepository)
	}
	if img == nil {
		return fmt.Errorf("%s has no registry identity: only exactReference or exactRepository can match it", ref)
	}
	if id.Type == IdentityRemapIdentity {
		if img = remap(img, id.Prefix, id.SignedPrefix); img == nil {
			return fmt.Errorf("signed identity %s does not match %s", signed, ref)
		}
	}
	_, byDigest := img.(name.Digest)
	switch {
	case id.Type == IdentityMatchRepository,
		(id.Type == IdentityMatchRepoDigestOrExact || id.Type == IdentityRemapIdentity) && byDigest:
		if sig.Context().Name() == img.Context().Name() {
			return nil
		}
	default: // matchExact, or matchRepoDigestOrExact of a tag
		if sigTagged && sig.Name() == img.Name() {
			return nil
		}
	}
	return fmt.Errorf("signed identity %s does not match %s (signedIdentity %s)", signed, img.Name(), id.Type)
}

// hasTagOrDigest reports whether a docker reference string names a tag or
// digest (ggcr would default a bare repository to :latest).
func hasTagOrDigest(s string) bool {
	return strings.Contains(s, "@") || strings.Contains(lastPathElem(s), ":")
}

// remap rewrites img's name when it starts with prefix (a whole path
// component match, as containers/image's remapIdentity), else nil. The
// prefix is matched against the name as containers/image spells it
// ("docker.io/library/busybox:1", see dockerPolicyName), literally.
func remap(img name.Reference, prefix, signedPrefix string) name.Reference {
	full := dockerPolicyName(img)
	switch r := img.(type) {
	case name.Tag:
		full += ":" + r.TagStr()
	case name.Digest:
		full += "@" + r.DigestStr()
	}
	rest, ok := strings.CutPrefix(full, prefix)
	if !ok || (rest != "" && !strings.ContainsAny(rest[:1], "/:@")) {
		return nil
	}
	r, err := name.ParseReference(signedPrefix + rest)
	if err != nil {
		return nil
	}
	return r
}
