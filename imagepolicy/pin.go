package imagepolicy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coffer-dev/coffer/imagecrypt"
	"github.com/coffer-dev/coffer/resource"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
)

// PinType is the resource type pins live under in the broker:
// <repo>/image_pin/<hex sha256 of the image identity>. repo is the repo of
// the image's key id (usually "default").
const PinType = "image_pin"

const (
	pinVersion     = 1
	maxPinSize     = 256 << 10 // 2048 manifest digests fit; real pins are a few hundred bytes
	maxPinEntries  = 2048
	maxIdentityLen = 2048
)

// Pin is what the broker vouches for: the manifest digest written for an
// image name. For an index, Digest is the index's and Manifests lists the
// digests it references (informative: the index digest already binds them).
type Pin struct {
	Version   int       `json:"version"`
	Reference string    `json:"reference"`
	MediaType string    `json:"mediaType"`
	Digest    v1.Hash   `json:"digest"`
	Manifests []v1.Hash `json:"manifests,omitempty"`
}

// Identity is the name a pin is stored under and checked against:
// "docker://REGISTRY/REPOSITORY:TAG" (normalized: docker.io/library/…) for
// a registry, the reference as written for local transports. A reference by
// digest has none (the digest itself vouches for the content): ok is false.
func Identity(ref transport.Reference) (id string, ok bool) {
	if _, byDigest := transport.NamedDigest(ref); byDigest {
		return "", false
	}
	if n, isDocker := transport.DockerName(ref); isDocker {
		t, isTag := n.(name.Tag)
		if !isTag {
			return "", false
		}
		return "docker://" + t.Context().Name() + ":" + t.TagStr(), true
	}
	return ref.String(), true
}

// PinPath is the broker resource holding the pin of identity in repo.
func PinPath(repo, identity string) resource.Path {
	sum := sha256.Sum256([]byte(identity))
	return resource.Path{Repo: repo, Type: PinType, Tag: hex.EncodeToString(sum[:])}
}

// PinFor computes the pin of an artifact about to be written as identity.
func PinFor(a transport.Artifact, identity string) (Pin, error) {
	p := Pin{Version: pinVersion, Reference: identity}
	var raw []byte
	var err error
	switch {
	case a.Image != nil:
		raw, err = a.Image.RawManifest()
	case a.Index != nil:
		raw, err = a.Index.RawManifest()
	default:
		return Pin{}, fmt.Errorf("pin: empty artifact")
	}
	if err != nil {
		return Pin{}, fmt.Errorf("pin: reading manifest: %w", err)
	}
	p.Digest = sha256Hash(raw)
	if a.Index != nil {
		im, err := v1.ParseIndexManifest(bytes.NewReader(raw))
		if err != nil {
			return Pin{}, fmt.Errorf("pin: parsing index: %w", err)
		}
		p.MediaType = string(im.MediaType)
		for _, d := range im.Manifests {
			p.Manifests = append(p.Manifests, d.Digest)
		}
	} else {
		mt, err := a.Image.MediaType()
		if err != nil {
			return Pin{}, fmt.Errorf("pin: %w", err)
		}
		p.MediaType = string(mt)
	}
	return p, nil
}

// Marshal is the pin's JSON, as stored in the broker.
func (p Pin) Marshal() ([]byte, error) { return json.Marshal(p) }

// ParsePin parses a pin fetched from the broker. It is bounded (size,
// entries) and strict: unknown versions and malformed digests are errors.
func ParsePin(data []byte) (Pin, error) {
	if len(data) > maxPinSize {
		return Pin{}, fmt.Errorf("pin: %d bytes, more than %d: %w", len(data), maxPinSize, spec.ErrUnsupported)
	}
	if n := bytes.Count(data, []byte("sha256:")); n > maxPinEntries+1 {
		return Pin{}, fmt.Errorf("pin: %d digests, more than %d: %w", n, maxPinEntries, spec.ErrUnsupported)
	}
	var p Pin
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return Pin{}, fmt.Errorf("pin: %v: %w", err, spec.ErrUnsupported)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Pin{}, fmt.Errorf("pin: trailing data: %w", spec.ErrUnsupported)
	}
	switch {
	case p.Version != pinVersion:
		return Pin{}, fmt.Errorf("pin: version %d, want %d: %w", p.Version, pinVersion, spec.ErrUnsupported)
	case p.Reference == "" || len(p.Reference) > maxIdentityLen:
		return Pin{}, fmt.Errorf("pin: missing or oversized reference: %w", spec.ErrUnsupported)
	case p.Digest.Algorithm != "sha256":
		return Pin{}, fmt.Errorf("pin: digest must be sha256: %w", spec.ErrUnsupported)
	}
	for _, h := range p.Manifests {
		if h.Algorithm != "sha256" {
			return Pin{}, fmt.Errorf("pin: manifest digest must be sha256: %w", spec.ErrUnsupported)
		}
	}
	return p, nil
}

// PinStore is where the owner writes pins: *adminclient.Client.
type PinStore interface {
	SetResource(ctx context.Context, path string, data []byte) error
}

// Pinned is the record of one pin written by PinOnWrite.
type Pinned struct {
	Path resource.Path
	Pin  Pin
}

// PinOnWrite wraps t (an encrypt transform) so that the manifest digest of
// what t produces is stored in the broker as the pin of dst, under repo,
// before coffer writes it to dst: the pin never lags behind the registry
// (a failed write leaves a pin the old image no longer matches, which fails
// closed). done, if not nil, receives the record.
func PinOnWrite(t imagecrypt.Transform, store PinStore, repo string, dst transport.Reference, done func(Pinned)) (imagecrypt.Transform, error) {
	id, ok := Identity(dst)
	if !ok {
		return nil, fmt.Errorf("pinning: %s names a digest, not a tag; write to a tag to pin it: %w", dst, spec.ErrUnsupported)
	}
	path := PinPath(repo, id)
	if err := path.Validate(); err != nil {
		return nil, fmt.Errorf("pinning: %w", err)
	}
	return func(ctx context.Context, in imagecrypt.Artifact, opts ...imagecrypt.Option) (*imagecrypt.Result, error) {
		res, err := t(ctx, in, opts...)
		if err != nil {
			return nil, err
		}
		p, err := PinFor(transport.Artifact(res.Artifact), id)
		if err == nil {
			var raw []byte
			if raw, err = p.Marshal(); err == nil {
				err = store.SetResource(ctx, path.String(), raw)
			}
		}
		if err != nil {
			res.Close()
			return nil, fmt.Errorf("recording the digest pin at kbs:///%s: %w", path, err)
		}
		if done != nil {
			done(Pinned{Path: path, Pin: p})
		}
		return res, nil
	}, nil
}

func sha256Hash(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

// IsRegistry reports whether ref is a docker:// reference (pinning is the
// default for those when a broker holds the key).
func IsRegistry(ref transport.Reference) bool { return ref.Transport() == "docker" }

// PinImage pins what ref holds now: it reads the manifest (when want is
// set, it must have that digest) and stores its pin under repo. Use it to
// pin an image encrypted before pins existed or to re-pin after rekey (which
// rewrites the manifest); pinning without want trusts the source at this
// moment, so compare the digest printed with the one you pushed.
func PinImage(ctx context.Context, ref transport.Reference, store PinStore, repo string, want *v1.Hash, topts ...transport.Option) (Pinned, error) {
	id, ok := Identity(ref)
	if !ok {
		return Pinned{}, fmt.Errorf("pinning: %s names a digest, not a tag: pin the tag it is pulled by: %w", ref, spec.ErrUnsupported)
	}
	path := PinPath(repo, id)
	if err := path.Validate(); err != nil {
		return Pinned{}, fmt.Errorf("pinning: %w", err)
	}
	a, closeFn, err := transport.Read(ctx, ref, topts...)
	if err != nil {
		return Pinned{}, err
	}
	defer closeFn()
	p, err := PinFor(a, id)
	if err != nil {
		return Pinned{}, err
	}
	if want != nil && *want != p.Digest {
		return Pinned{}, fmt.Errorf("%s holds %s, not the %s given: refusing to pin it: %w", ref, p.Digest, want, spec.ErrIntegrity)
	}
	raw, err := p.Marshal()
	if err != nil {
		return Pinned{}, err
	}
	if err := store.SetResource(ctx, path.String(), raw); err != nil {
		return Pinned{}, fmt.Errorf("recording the digest pin at kbs:///%s: %w", path, err)
	}
	return Pinned{Path: path, Pin: p}, nil
}
