package imagepolicy

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"strconv"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
)

// The JSON of a key-based sigstore bundle v0.3 with a DSSE envelope (the
// protobuf-specs Bundle message in its JSON mapping: bytes are base64).
type (
	bundleJSON struct {
		MediaType            string       `json:"mediaType"`
		VerificationMaterial bundleVM     `json:"verificationMaterial"`
		DSSEEnvelope         dsseEnvelope `json:"dsseEnvelope"`
	}
	bundleVM struct {
		PublicKey struct {
			Hint []byte `json:"hint"`
		} `json:"publicKey"`
		TlogEntries []struct{} `json:"tlogEntries"`
	}
	dsseEnvelope struct {
		Payload     []byte    `json:"payload"`
		PayloadType string    `json:"payloadType"`
		Signatures  []dsseSig `json:"signatures"`
	}
	dsseSig struct {
		Sig []byte `json:"sig"`
	}
	inTotoStatement struct {
		Type    string `json:"_type"`
		Subject []struct {
			Name   string            `json:"name,omitempty"`
			Digest map[string]string `json:"digest"`
		} `json:"subject"`
		PredicateType string `json:"predicateType"`
	}
)

// dssePAE is DSSE's pre-authentication encoding, what is signed.
func dssePAE(payloadType string, payload []byte) []byte {
	b := []byte("DSSEv1 " + strconv.Itoa(len(payloadType)) + " " + payloadType + " " + strconv.Itoa(len(payload)) + " ")
	return append(b, payload...)
}

// KeyHint is the public key hint of a key-based bundle: the SHA-256 of
// the key's DER (PKIX) form, as cosign writes it.
func KeyHint(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(der)
	return sum[:], nil
}

// newKeyBundle signs an in-toto statement naming digest (as name) with
// key and returns the bundle JSON and the statement.
func newKeyBundle(key crypto.Signer, name string, digest v1.Hash) (bundle, statement []byte, err error) {
	var st inTotoStatement
	st.Type = "https://in-toto.io/Statement/v1"
	st.PredicateType = CosignSignPredicateType
	st.Subject = append(st.Subject, struct {
		Name   string            `json:"name,omitempty"`
		Digest map[string]string `json:"digest"`
	}{Name: name, Digest: map[string]string{digest.Algorithm: digest.Hex}})
	if statement, err = json.Marshal(st); err != nil {
		return nil, nil, err
	}
	sig, err := signRaw(key, dssePAE(InTotoPayloadType, statement))
	if err != nil {
		return nil, nil, err
	}
	b := bundleJSON{MediaType: BundleArtifactType,
		DSSEEnvelope: dsseEnvelope{Payload: statement, PayloadType: InTotoPayloadType, Signatures: []dsseSig{{Sig: sig}}}}
	if b.VerificationMaterial.PublicKey.Hint, err = KeyHint(key.Public()); err != nil {
		return nil, nil, err
	}
	b.VerificationMaterial.TlogEntries = []struct{}{}
	bundle, err = json.Marshal(b)
	return bundle, statement, err
}

// signBundle writes the bundle referrer of subject (see WithBundle).
func signBundle(ctx context.Context, ref transport.Reference, key crypto.Signer, id string, d v1.Hash, subject v1.Descriptor, o *signOptions) (Signed, error) {
	n, ok := transport.DockerName(ref)
	if !ok {
		return Signed{}, fmt.Errorf("signing %s: a sigstore bundle is attached as an OCI 1.1 referrer, in a registry only: %w", ref, spec.ErrUnsupported)
	}
	bundle, statement, err := newKeyBundle(key, id, d)
	if err != nil {
		return Signed{}, err
	}
	// cosign's shape: the config's media type is the artifact type
	// registries report; one layer, the bundle.
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), BundleArtifactType)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer: static.NewLayer(bundle, BundleArtifactType),
	})
	if err != nil {
		return Signed{}, err
	}
	img = mutate.Annotations(img, map[string]string{
		"dev.sigstore.bundle.content":       "dsse-envelope",
		"dev.sigstore.bundle.predicateType": CosignSignPredicateType,
	}).(v1.Image)
	img = mutate.Subject(img, subject).(v1.Image)
	rd, err := img.Digest()
	if err != nil {
		return Signed{}, err
	}
	sref, err := transport.Parse("docker://" + n.Context().Digest(rd.String()).String())
	if err != nil {
		return Signed{}, err
	}
	if err := transport.Write(ctx, sref, transport.Artifact{Image: img}, o.transport...); err != nil {
		return Signed{}, err
	}
	return Signed{Digest: d, Identity: id, At: sref, Payload: statement}, nil
}
