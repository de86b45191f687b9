package wpm

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/coffer-dev/coffer/imagecrypt"
	"github.com/coffer-dev/coffer/internal/atomicfile"
	"github.com/coffer-dev/coffer/kbs/adminclient"
	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/secl/flavor"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
)

// wrapper is a keywrap.Wrapper for one broker key.
type wrapper struct {
	kek    []byte
	keyURL string
}

func (w *wrapper) Scheme() string { return "provider." + flavor.ProviderName }

func (w *wrapper) Wrap(_ context.Context, privopts []byte) ([]byte, error) {
	return flavor.SealAnnotation(w.kek, w.keyURL, privopts)
}

// newBrokerKey creates a fresh key in the broker and returns it with its id.
func newBrokerKey(ctx context.Context, admin *adminclient.Client) (key []byte, id string, err error) {
	id = uuid.NewString()
	key = make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, "", err
	}
	if err := admin.CreateResource(ctx, flavor.KeyResource(id), key); err != nil {
		clear(key)
		return nil, "", fmt.Errorf("wpm: creating the image key in the broker: %w", err)
	}
	return key, id, nil
}

// KeyProvider is the owner's side of SecL's ocicrypt keyprovider
// (`coffer wpm get-ocicrypt-wrappedkey`, the "cmd" provider skopeo calls
// for --encryption-key provider:isecl:any): keywrap creates a key in the
// broker and seals the layer options with it. Parameters: "any" (or none)
// for a new key per call. SecL's "key-id:<uuid>" (re-use a broker key)
// and "asset-tag:…" are refused: coffer's broker never hands a key back to
// its admin. keyunwrap is the host's business (`coffer wla keyprovider`).
type KeyProvider struct {
	Admin     *adminclient.Client
	BrokerURL string
}

// WrapKey implements keyprovider.Handler.
func (k *KeyProvider) WrapKey(ctx context.Context, params map[string][][]byte, optsData []byte) ([]byte, error) {
	ps, ok := params[flavor.ProviderName]
	if !ok {
		return nil, fmt.Errorf("no %q parameters in the request: %w", flavor.ProviderName, spec.ErrUnsupported)
	}
	for _, p := range ps {
		if s := strings.TrimSpace(string(p)); s != "" && s != "any" {
			return nil, fmt.Errorf("isecl parameter %q: coffer supports provider:isecl:any (a new broker key): %w", s, spec.ErrUnsupported)
		}
	}
	key, id, err := newBrokerKey(ctx, k.Admin)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	return flavor.SealAnnotation(key, flavor.KeyURL(k.BrokerURL, id), optsData)
}

// UnwrapKey implements keyprovider.Handler: the owner does not unwrap.
func (k *KeyProvider) UnwrapKey(context.Context, map[string][][]byte, []byte) ([]byte, error) {
	return nil, fmt.Errorf("the image owner's keyprovider does not unwrap (use coffer wla keyprovider on the host): %w", spec.ErrNoKey)
}

// ContainerFlavorRequest says what CreateContainerImageFlavor does.
type ContainerFlavorRequest struct {
	Label            string
	Source, Dest     string // transport references, e.g. oci:app:v1 and oci:app:enc
	FlavorOut        string
	BrokerURL        string
	AdminKeyFile     string
	SigningKeyFile   string
	TransportOptions []transport.Option
	AdminOptions     []adminclient.Option // for the broker client (e.g. its TLS trust)
}

// CreateContainerImageFlavor creates one key in the broker, encrypts every
// layer of Source to Dest with it (ocicrypt layers, SecL's provider.isecl
// annotation naming the key URL) and writes the signed CONTAINER_IMAGE flavor.
func CreateContainerImageFlavor(ctx context.Context, r ContainerFlavorRequest) (*flavor.Flavor, error) {
	if r.Label == "" || r.Source == "" || r.Dest == "" || r.FlavorOut == "" || r.BrokerURL == "" || r.AdminKeyFile == "" || r.SigningKeyFile == "" {
		return nil, errors.New("wpm: label, source, destination, flavor output, broker, admin key and signing key are all required")
	}
	src, err := transport.Parse(r.Source)
	if err != nil {
		return nil, err
	}
	dst, err := transport.Parse(r.Dest)
	if err != nil {
		return nil, err
	}
	signer, err := LoadSigningKey(r.SigningKeyFile)
	if err != nil {
		return nil, err
	}
	ak, err := adminclient.LoadKey(r.AdminKeyFile)
	if err != nil {
		return nil, err
	}
	admin, err := adminclient.New(r.BrokerURL, ak, r.AdminOptions...)
	if err != nil {
		return nil, err
	}
	key, id, err := newBrokerKey(ctx, admin)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	keyURL := flavor.KeyURL(r.BrokerURL, id)
	var w keywrap.Wrapper = &wrapper{kek: key, keyURL: keyURL}
	if _, err := imagecrypt.Copy(ctx, src, dst, imagecrypt.EncryptFor(w), r.TransportOptions); err != nil {
		return nil, fmt.Errorf("wpm: %w", err)
	}
	f, err := flavor.New(flavor.PartContainerImage, r.Label, keyURL, "")
	if err != nil {
		return nil, err
	}
	doc, err := flavor.Sign(f, signer)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Write(r.FlavorOut, append(doc, '\n'), atomicfile.Mode(0o644)); err != nil {
		return nil, fmt.Errorf("wpm: %w", err)
	}
	return f, nil
}

// NewKeyProvider returns the owner's keyprovider for the broker at
// brokerURL, administered with the Ed25519 key in adminKeyFile.
func NewKeyProvider(brokerURL, adminKeyFile string, opts ...adminclient.Option) (*KeyProvider, error) {
	k, err := adminclient.LoadKey(adminKeyFile)
	if err != nil {
		return nil, err
	}
	a, err := adminclient.New(brokerURL, k, opts...)
	if err != nil {
		return nil, err
	}
	return &KeyProvider{Admin: a, BrokerURL: brokerURL}, nil
}
