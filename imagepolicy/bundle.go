package imagepolicy

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
)

// Sigstore bundle vocabulary (cosign v3's default format).
const (
	// BundleArtifactType is the artifactType (and layer media type) of a
	// referrer holding a sigstore bundle v0.3, as cosign v3 attaches it.
	BundleArtifactType = "application/vnd.dev.sigstore.bundle.v0.3+json"
	// CosignSignPredicateType is the in-toto predicate type of the DSSE
	// statement cosign v3 signs an image digest with.
	CosignSignPredicateType = "https://sigstore.dev/cosign/sign/v1"
	// InTotoPayloadType is the DSSE payload type of an in-toto statement.
	InTotoPayloadType = "application/vnd.in-toto+json"

	// MaxBundleSize bounds one bundle (real ones are a few KiB; a
	// certificate chain, a Rekor entry with a proof and a TSA token stay
	// far below).
	MaxBundleSize  = 256 << 10
	maxBundleDepth = 32
)

// ParseBundle parses a sigstore bundle (media types v0.1 to v0.3) from
// untrusted bytes: size and nesting are bounded before sigstore-go's
// protobuf JSON decoding and its structural validation (known version,
// verification material, exactly one signature).
func ParseBundle(data []byte) (*bundle.Bundle, error) {
	if len(data) > MaxBundleSize {
		return nil, fmt.Errorf("sigstore bundle of %d bytes, more than %d: %w", len(data), MaxBundleSize, spec.ErrUnsupported)
	}
	if err := checkDepth(data, maxBundleDepth); err != nil {
		return nil, fmt.Errorf("sigstore bundle: %w", err)
	}
	var b bundle.Bundle
	if err := b.UnmarshalJSON(data); err != nil {
		return nil, fmt.Errorf("sigstore bundle: %v: %w", err, spec.ErrIntegrity)
	}
	return &b, nil
}

// BundleTrust is what a bundle is verified against, all offline: a
// trusted_root.json (Fulcio CAs, Rekor v1/v2 logs, timestamp authorities,
// CT logs), or the roots a containers-policy.json names (a Fulcio CA and
// Rekor keys), or both; and who may have signed: public keys, or one
// Fulcio identity.
type BundleTrust struct {
	// TrustedRoot is a parsed trusted_root.json; nil when the roots come
	// from FulcioCAs and RekorKeys only.
	TrustedRoot *root.TrustedRoot
	FulcioCAs   []*x509.Certificate
	RekorKeys   []crypto.PublicKey
	// Keys are accepted signers (key-based bundles); else Issuer and
	// Subject (a certificate's OIDC issuer and SAN: an email or URI) are.
	Keys            []crypto.PublicKey
	Issuer, Subject string
}

// trustedMaterial joins the trusted_root.json and the policy's roots.
func (t *BundleTrust) trustedMaterial() (root.TrustedMaterialCollection, error) {
	var tm root.TrustedMaterialCollection
	if t.TrustedRoot != nil {
		tm = append(tm, t.TrustedRoot)
	}
	if len(t.FulcioCAs) == 0 && len(t.RekorKeys) == 0 {
		return tm, nil
	}
	var cas []root.CertificateAuthority
	var inter []*x509.Certificate
	for _, c := range t.FulcioCAs {
		if !bytes.Equal(c.RawIssuer, c.RawSubject) {
			inter = append(inter, c)
		}
	}
	for _, c := range t.FulcioCAs {
		if bytes.Equal(c.RawIssuer, c.RawSubject) {
			cas = append(cas, &root.FulcioCertificateAuthority{Root: c, Intermediates: inter})
		}
	}
	if len(t.FulcioCAs) > 0 && len(cas) == 0 {
		return nil, fmt.Errorf("the Fulcio CA: no self-signed root certificate: %w", spec.ErrUnsupported)
	}
	logs := map[string]*root.TransparencyLog{}
	for _, k := range t.RekorKeys {
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			return nil, fmt.Errorf("the Rekor key: %v: %w", err, spec.ErrUnsupported)
		}
		id := sha256.Sum256(der) // Rekor's log ID is the SHA-256 of its key's DER
		// A policy key has no validity period (containers/image trusts it
		// for all time); sigstore-go wants a start, so: the epoch. No
		// base URL either, so Rekor v2 checkpoints (whose origin is the
		// log's name) need a trusted_root.json.
		logs[hex.EncodeToString(id[:])] = &root.TransparencyLog{ID: id[:], PublicKey: k,
			HashFunc: crypto.SHA256, SignatureHashFunc: crypto.SHA256, ValidityPeriodStart: time.Unix(1, 0)}
	}
	pr, err := root.NewTrustedRoot(root.TrustedRootMediaType01, cas, nil, nil, logs)
	if err != nil {
		return nil, err
	}
	return append(tm, pr), nil
}

// BundleResult is what a verified bundle vouches for.
type BundleResult struct {
	// Names are the in-toto subject names of a DSSE bundle (empty for
	// cosign v3's image signatures, which name only the digest).
	Names []string
	// PredicateType of a DSSE statement; "" for a message signature.
	PredicateType string
	Signer        string // the key or certificate identity, for messages
}

// VerifyBundle verifies a sigstore bundle over an artifact of the given
// SHA-256 digest (a message signature over those bytes, or a DSSE
// in-toto statement with that subject) against t, offline: signature,
// certificate chain at the logged or timestamped time, Rekor inclusion
// (SET or proof with a checkpoint), RFC 3161 timestamps and SCTs when the
// trust material has CT logs. Any failure is spec.ErrIntegrity.
func VerifyBundle(ctx context.Context, data []byte, t BundleTrust, sha256Digest []byte) (BundleResult, error) {
	var res BundleResult
	if err := ctx.Err(); err != nil {
		return res, err
	}
	b, err := ParseBundle(data)
	if err != nil {
		return res, err
	}
	tm, err := t.trustedMaterial()
	if err != nil {
		return res, err
	}
	if len(tm) == 0 && len(t.Keys) == 0 {
		return res, fmt.Errorf("sigstore bundle: no trust material (a trusted_root.json, a Fulcio CA or a key): %w", spec.ErrUnsupported)
	}
	artifact := verify.WithArtifactDigest("sha256", sha256Digest)
	logs := len(tm.RekorLogs()) > 0
	if len(t.Keys) > 0 {
		var reasons []string
		for _, k := range t.Keys {
			sv, err := signature.LoadVerifier(k, crypto.SHA256)
			if err != nil {
				return res, fmt.Errorf("the policy key: %v: %w", err, spec.ErrUnsupported)
			}
			km := root.NewTrustedPublicKeyMaterial(func(string) (root.TimeConstrainedVerifier, error) {
				return root.NewExpiringKey(sv, time.Time{}, time.Time{}), nil
			})
			mat := append(root.TrustedMaterialCollection{km}, tm...)
			var opts []verify.VerifierOption
			if logs {
				opts = append(opts, verify.WithTransparencyLog(1))
			}
			if logs || len(tm.TimestampingAuthorities()) > 0 {
				opts = append(opts, verify.WithObserverTimestamps(1))
			} else {
				opts = append(opts, verify.WithNoObserverTimestamps())
			}
			r, err := runVerifier(b, mat, opts, verify.NewPolicy(artifact, verify.WithKey()))
			if err == nil {
				return bundleResult(r, "key"), nil
			}
			reasons = append(reasons, err.Error())
		}
		return res, fmt.Errorf("sigstore bundle: verifies with none of the %d key(s): %s: %w", len(t.Keys), strings.Join(reasons, "; "), spec.ErrIntegrity)
	}
	if t.Issuer == "" || t.Subject == "" {
		return res, fmt.Errorf("sigstore bundle: no key and no certificate identity (issuer, subject) to accept: %w", spec.ErrUnsupported)
	}
	id, err := verify.NewShortCertificateIdentity(t.Issuer, "", t.Subject, "")
	if err != nil {
		return res, fmt.Errorf("certificate identity: %v: %w", err, spec.ErrUnsupported)
	}
	opts := []verify.VerifierOption{verify.WithObserverTimestamps(1)}
	if logs {
		opts = append(opts, verify.WithTransparencyLog(1))
	}
	if len(tm.CTLogs()) > 0 {
		opts = append(opts, verify.WithSignedCertificateTimestamps(1))
	}
	r, err := runVerifier(b, tm, opts, verify.NewPolicy(artifact, verify.WithCertificateIdentity(id)))
	if err != nil {
		return res, fmt.Errorf("sigstore bundle: %v: %w", err, spec.ErrIntegrity)
	}
	return bundleResult(r, t.Subject), nil
}

func runVerifier(b *bundle.Bundle, tm root.TrustedMaterial, opts []verify.VerifierOption, p verify.PolicyBuilder) (r *verify.VerificationResult, err error) {
	v, err := verify.NewVerifier(tm, opts...)
	if err != nil {
		return nil, err
	}
	// A verifier bug on hostile input must refuse the bundle, not crash
	// the pull.
	defer func() {
		if p := recover(); p != nil {
			r, err = nil, fmt.Errorf("verifier panic: %v", p)
		}
	}()
	return v.Verify(b, p)
}

func bundleResult(r *verify.VerificationResult, signer string) BundleResult {
	res := BundleResult{Signer: signer}
	if r.Statement != nil {
		res.PredicateType = r.Statement.GetPredicateType()
		for _, s := range r.Statement.GetSubject() {
			if s.GetName() != "" {
				res.Names = append(res.Names, s.GetName())
			}
		}
	}
	return res
}

// BundleSignatures reads the sigstore bundles attached to digest in ref's
// registry as OCI 1.1 referrers of artifactType BundleArtifactType (the
// registry's referrers API, or the "sha256-<hex>" tag fallback). None is
// no error; other transports hold none.
func BundleSignatures(ctx context.Context, ref transport.Reference, digest v1.Hash, topts ...transport.Option) ([]Signature, error) {
	n, isDocker := transport.DockerName(ref)
	if !isDocker {
		return nil, nil
	}
	// Unfiltered: cosign v3 puts the artifact type in the manifest's
	// artifactType field over an empty config, and registries that derive
	// a referrer's type from its config (go-containerregistry's) report it
	// as application/vnd.oci.empty.v1+json.
	descs, err := transport.Referrers(ctx, ref, digest, "", topts...)
	if err != nil {
		if errors.Is(err, spec.ErrNotFound) {
			return nil, nil
		}
		return nil, err
	}
	var out []Signature
	read := 0
	for _, d := range descs {
		if !isBundleReferrer(d) {
			continue
		}
		if read == maxReferrerSigs {
			break
		}
		read++
		rref, err := transport.Parse("docker://" + n.Context().Digest(d.Digest.String()).String())
		if err != nil {
			continue
		}
		sigs, err := bundlesAt(ctx, rref, topts)
		if err != nil {
			return nil, err
		}
		out = append(out, sigs...)
		if len(out) >= maxSignatures { // each costs a verification: bound the total
			return out[:maxSignatures], nil
		}
	}
	return out, nil
}

// isBundleReferrer: a referrer of type BundleArtifactType, or one over
// the empty config whose annotations say it holds a bundle (cosign v3's,
// as config-typing registries list it); its layers are checked after.
func isBundleReferrer(d v1.Descriptor) bool {
	if d.ArtifactType == BundleArtifactType {
		return true
	}
	_, ok := d.Annotations["dev.sigstore.bundle.content"]
	return ok && (d.ArtifactType == "" || d.ArtifactType == "application/vnd.oci.empty.v1+json")
}

// isBundleMediaType: v0.3 names the version in the type; v0.1 and v0.2
// as a parameter.
func isBundleMediaType(mt string) bool {
	return strings.HasPrefix(mt, "application/vnd.dev.sigstore.bundle.v0.") && strings.HasSuffix(mt, "+json") ||
		strings.HasPrefix(mt, "application/vnd.dev.sigstore.bundle+json;version=0.")
}

func bundlesAt(ctx context.Context, rref transport.Reference, topts []transport.Option) ([]Signature, error) {
	a, closeFn, err := transport.Read(ctx, rref, topts...)
	if errors.Is(err, spec.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading bundle referrer %s: %w", rref, err)
	}
	defer closeFn()
	if a.Image == nil {
		return nil, fmt.Errorf("bundle referrer %s: not an image manifest: %w", rref, spec.ErrUnsupported)
	}
	m, err := a.Image.Manifest()
	if err != nil {
		return nil, fmt.Errorf("bundle referrer %s: %w", rref, err)
	}
	var out []Signature
	for i, d := range m.Layers {
		if len(out) >= maxSignatures {
			break
		}
		if !isBundleMediaType(string(d.MediaType)) || d.Size > MaxBundleSize || d.Size < 0 {
			continue
		}
		data, err := readBlob(a.Image, d)
		if err != nil {
			return nil, fmt.Errorf("bundle referrer %s layer %d: %w", rref, i, err)
		}
		out = append(out, Signature{Bundle: data, Source: fmt.Sprintf("%s#%d", rref, i)})
	}
	return out, nil
}

// sigstoreVerifiers verifies both forms a sigstoreSigned requirement
// accepts: cosign v2 simple-signing signatures (sigstoreVerifier) and
// sigstore bundles (sigstore-go, against trust). Either may be
// unavailable for a requirement (a Fulcio rule whose CA only a
// trusted_root.json holds has no v2 form); its error is then the reason
// given for each signature of that form.
type sigstoreVerifiers struct {
	ctx      context.Context // the check's, for bundle verification
	v2       *sigstoreVerifier
	v2Err    error
	trust    BundleTrust
	trustErr error
}

func (s *sigstoreVerifiers) VerifySignature(sig Signature) ([]byte, error) {
	if s.v2Err != nil {
		return nil, s.v2Err
	}
	return s.v2.VerifySignature(sig)
}

func (r *Requirement) sigstoreVerifiers() (*sigstoreVerifiers, error) {
	v := &sigstoreVerifiers{}
	if r.Fulcio != nil && r.Fulcio.ca == nil {
		v.v2Err = fmt.Errorf("a cosign v2 keyless signature needs the policy's fulcio caPath/caData (the trustedRoot serves bundles only): %w", spec.ErrPolicyDenied)
	} else if v.v2, v.v2Err = newSigstoreVerifier(r.keys, r.rekorKeys, r.Fulcio); v.v2Err != nil {
		return nil, v.v2Err
	}
	v.trust, v.trustErr = r.bundleTrust()
	if v.trustErr != nil && v.v2Err != nil {
		return nil, v.trustErr
	}
	return v, nil
}

// bundleTrust maps the requirement onto sigstore-go's verifier: keys,
// or fulcio's CA and identity (subjectEmail as the certificate SAN,
// oidcIssuer), rekorPublicKey* as Rekor logs, and trustedRoot*.
func (r *Requirement) bundleTrust() (BundleTrust, error) {
	var t BundleTrust
	if r.trustedRoot != nil {
		if len(r.trustedRoot) > maxKeySize {
			return t, fmt.Errorf("trusted root: too large: %w", spec.ErrUnsupported)
		}
		tr, err := root.NewTrustedRootFromJSON(r.trustedRoot)
		if err != nil {
			return t, fmt.Errorf("trusted root: %v: %w", err, spec.ErrUnsupported)
		}
		t.TrustedRoot = tr
	}
	for _, k := range r.keys {
		pub, err := ParsePublicKey(k)
		if err != nil {
			return t, err
		}
		t.Keys = append(t.Keys, pub)
	}
	for _, k := range r.rekorKeys {
		pub, err := ParsePublicKey(k)
		if err != nil {
			return t, fmt.Errorf("the Rekor key: %w", err)
		}
		t.RekorKeys = append(t.RekorKeys, pub)
	}
	if f := r.Fulcio; f != nil {
		if f.ca != nil {
			certs, err := parseCerts(f.ca, maxCACerts)
			if err != nil || len(certs) == 0 {
				return t, fmt.Errorf("the Fulcio CA: no certificate (%v): %w", err, spec.ErrUnsupported)
			}
			t.FulcioCAs = certs
		}
		t.Issuer, t.Subject = f.OIDCIssuer, f.SubjectEmail
	}
	return t, nil
}

// acceptBundle checks one bundle signature against img: it verifies
// (VerifyBundle) over img's manifest digest; a DSSE statement must be
// cosign's signing predicate (an attestation of another kind is no
// signature); a subject name, when the statement carries one, must pass
// the signedIdentity rule. cosign v3 names only the digest: such a
// bundle binds no repository, so it passes only the rules that accept a
// digest-bound signature (matchRepoDigestOrExact, matchRepository), never
// one that asks for an exact signed name.
func (r *Requirement) acceptBundle(v SignatureVerifier, s Signature, img Image) (string, error) {
	sv, ok := v.(*sigstoreVerifiers)
	if !ok {
		return "", fmt.Errorf("a sigstore bundle under a %s requirement: %w", r.Type, spec.ErrPolicyDenied)
	}
	if sv.trustErr != nil {
		return "", sv.trustErr
	}
	want, err := hex.DecodeString(img.Digest.Hex)
	if err != nil || img.Digest.Algorithm != "sha256" {
		return "", fmt.Errorf("image digest %s: want sha256: %w", img.Digest, spec.ErrUnsupported)
	}
	ctx := sv.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	res, err := VerifyBundle(ctx, s.Bundle, sv.trust, want)
	if err != nil {
		return "", err
	}
	if res.PredicateType != "" && res.PredicateType != CosignSignPredicateType {
		return "", fmt.Errorf("the bundle's statement is a %q attestation, not a signature (%s): %w", res.PredicateType, CosignSignPredicateType, spec.ErrPolicyDenied)
	}
	if len(res.Names) == 0 {
		switch r.SignedIdentity.Type {
		case IdentityMatchRepoDigestOrExact, IdentityMatchRepository:
			return fmt.Sprintf("%s (sigstore bundle by %s) signs %s", s.Source, res.Signer, img.Digest), nil
		}
		return "", fmt.Errorf("the bundle signs only the digest, no name, and signedIdentity %s needs a signed name: %w", r.SignedIdentity.Type, spec.ErrPolicyDenied)
	}
	var reasons []string
	for _, n := range res.Names {
		if err := r.SignedIdentity.match(img.Ref, n); err != nil {
			reasons = append(reasons, err.Error())
			continue
		}
		return fmt.Sprintf("%s (sigstore bundle by %s) signs %s as %s", s.Source, res.Signer, img.Digest, n), nil
	}
	return "", fmt.Errorf("the bundle's subject names: %s: %w", strings.Join(reasons, "; "), spec.ErrPolicyDenied)
}
