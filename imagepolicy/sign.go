package imagepolicy

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
)

// SignOption configures Sign.
type SignOption func(*signOptions) error

type signOptions struct {
	transport []transport.Option
	identity  string
	referrer  bool
	bundle    bool
}

// WithBundle writes the signature as a sigstore bundle v0.3, cosign v3's
// format: a DSSE envelope over an in-toto statement (predicate
// CosignSignPredicateType) whose subject is the manifest digest, named
// with the signed identity, and the key's hint (SHA-256 of its DER
// public key); attached as an OCI 1.1 referrer of artifactType
// BundleArtifactType (the referrers tag fallback on registries without
// the API). Key-based and offline: no Rekor entry. Registries only.
func WithBundle() SignOption {
	return func(o *signOptions) error { o.bundle = true; return nil }
}

// WithReferrer stores the signature as an OCI 1.1 referrer of the image
// (artifactType CosignReferrerType, subject = the image; what cosign's
// --registry-referrers-mode=oci-1-1 writes) instead of in the .sig tag.
// Registries only.
func WithReferrer() SignOption {
	return func(o *signOptions) error { o.referrer = true; return nil }
}

// WithSignTransport passes registry options (credentials, TLS).
func WithSignTransport(t ...transport.Option) SignOption {
	return func(o *signOptions) error { o.transport = append(o.transport, t...); return nil }
}

// WithSignedIdentity sets the docker-reference the payload names. Default:
// the reference signed, REGISTRY/REPO:TAG (a digest reference: REGISTRY/REPO).
func WithSignedIdentity(id string) SignOption {
	return func(o *signOptions) error { o.identity = id; return nil }
}

// Signed describes a signature Sign stored.
type Signed struct {
	Digest   v1.Hash             // the manifest digest signed
	Identity string              // docker-reference in the payload
	At       transport.Reference // where the signature was stored
	Payload  []byte              // the simple signing payload
}

// Sign signs the manifest digest of ref with key the way cosign does with
// a key pair: a simple signing payload ("cosign container image
// signature") as a layer of media type SimpleSigningMediaType with the
// base64 signature in CosignSignatureAnnotation, in the image tagged
// "sha256-<hex>.sig" of the same repository (or OCI layout). Signatures
// already there are kept. key: *ecdsa.PrivateKey, *rsa.PrivateKey or
// ed25519.PrivateKey (as ParseMaterial returns them).
func Sign(ctx context.Context, ref transport.Reference, key crypto.Signer, opts ...SignOption) (Signed, error) {
	o := &signOptions{}
	for _, f := range opts {
		if err := f(o); err != nil {
			return Signed{}, err
		}
	}
	a, closeFn, err := transport.Read(ctx, ref, o.transport...)
	if err != nil {
		return Signed{}, err
	}
	raw, err := rawManifest(a)
	var mt types.MediaType
	if err == nil && a.Image != nil {
		mt, err = a.Image.MediaType()
	} else if err == nil {
		mt, err = a.Index.MediaType()
	}
	closeFn()
	if err != nil {
		return Signed{}, err
	}
	d := sha256Hash(raw)
	if want, ok := transport.NamedDigest(ref); ok && want != d {
		return Signed{}, fmt.Errorf("%s: the manifest read has digest %s: %w", ref, d, spec.ErrIntegrity)
	}
	id := o.identity
	if id == "" {
		n, ok := transport.DockerName(ref)
		if !ok {
			return Signed{}, fmt.Errorf("signing %s: a local image has no registry name; pass the name it will be pulled as (WithSignedIdentity): %w", ref, spec.ErrUnsupported)
		}
		id = n.Context().Name()
		if t, isTag := n.(name.Tag); isTag {
			id = t.Name()
		}
	}
	if o.bundle {
		return signBundle(ctx, ref, key, id, d, v1.Descriptor{MediaType: mt, Digest: d, Size: int64(len(raw))}, o)
	}
	sref, ok := signatureRef(ref, d)
	if !ok || (o.referrer && !IsRegistry(ref)) {
		return Signed{}, fmt.Errorf("signing %s: signatures can be stored in a registry or an OCI layout (referrers: a registry) only: %w", ref, spec.ErrUnsupported)
	}
	payload, err := json.Marshal(NewPayload(id, d, CosignSignatureType))
	if err != nil {
		return Signed{}, err
	}
	sig, err := signRaw(key, payload)
	if err != nil {
		return Signed{}, err
	}
	var base v1.Image
	if o.referrer {
		base = mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), CosignReferrerType)
	} else if base, err = signatureBase(ctx, sref, o.transport); err != nil {
		return Signed{}, err
	}
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:       static.NewLayer(payload, SimpleSigningMediaType),
		Annotations: map[string]string{CosignSignatureAnnotation: base64.StdEncoding.EncodeToString(sig)},
	})
	if err != nil {
		return Signed{}, err
	}
	if o.referrer {
		// The config's media type is the artifact type registries report.
		img = mutate.Subject(img, v1.Descriptor{MediaType: mt, Digest: d, Size: int64(len(raw))}).(v1.Image)
		rd, err := img.Digest()
		if err != nil {
			return Signed{}, err
		}
		n, _ := transport.DockerName(ref)
		if sref, err = transport.Parse("docker://" + n.Context().Digest(rd.String()).String()); err != nil {
			return Signed{}, err
		}
	}
	if err := transport.Write(ctx, sref, transport.Artifact{Image: img}, o.transport...); err != nil {
		return Signed{}, err
	}
	return Signed{Digest: d, Identity: id, At: sref, Payload: payload}, nil
}

// signatureBase is the signature image already stored at sref, or an
// empty OCI image (cosign's shape) when there is none.
func signatureBase(ctx context.Context, sref transport.Reference, topts []transport.Option) (v1.Image, error) {
	a, closeFn, err := transport.Read(ctx, sref, topts...)
	if err == nil {
		defer closeFn()
		if a.Image == nil {
			return nil, fmt.Errorf("%s holds an index, not a signature image: %w", sref, spec.ErrUnsupported)
		}
		// Detach from the source: the layout may be rewritten below.
		return materialize(a.Image)
	}
	if !errors.Is(err, spec.ErrNotFound) {
		return nil, err
	}
	return mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON), nil
}

// materialize copies a small signature image into memory.
func materialize(img v1.Image) (v1.Image, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	if len(m.Layers) >= maxSignatures {
		return nil, fmt.Errorf("signature image already holds %d signatures: %w", len(m.Layers), spec.ErrUnsupported)
	}
	out := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	for _, d := range m.Layers {
		if d.Size > maxPayload || d.Size < 0 {
			return nil, fmt.Errorf("signature layer %s of %d bytes: %w", d.Digest, d.Size, spec.ErrUnsupported)
		}
		b, err := readBlob(img, d)
		if err != nil {
			return nil, err
		}
		if out, err = mutate.Append(out, mutate.Addendum{Layer: static.NewLayer(b, d.MediaType), Annotations: d.Annotations}); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// signRaw signs msg as cosign does: ECDSA (ASN.1) and RSA PKCS#1 v1.5 over
// SHA-256, Ed25519 over the message itself.
func signRaw(key crypto.Signer, msg []byte) ([]byte, error) {
	sum := sha256.Sum256(msg)
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		return ecdsa.SignASN1(rand.Reader, k, sum[:])
	case *rsa.PrivateKey:
		return rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, sum[:])
	case ed25519.PrivateKey:
		return ed25519.Sign(k, msg), nil
	}
	return nil, fmt.Errorf("signing key of type %T: want ECDSA, RSA or Ed25519: %w", key, spec.ErrUnsupported)
}
