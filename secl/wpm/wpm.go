// Package wpm is the image owner's side of the SecL workflow (SecL's
// Workload Policy Manager): it creates an image key in the owner's broker,
// encrypts the image with it and writes the signed image flavor that tells
// hosts where to fetch the key.
package wpm

import (
	"context"
	"crypto"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/coffer-dev/coffer/filecrypt"
	"github.com/coffer-dev/coffer/internal/atomicfile"
	"github.com/coffer-dev/coffer/kbs/adminclient"
	"github.com/coffer-dev/coffer/keywrap/keys"
	"github.com/coffer-dev/coffer/secl/flavor"
)

// LoadSigningKey reads the flavor signing key (PKCS#8, PKCS#1 or SEC1 PEM;
// RSA, ECDSA or Ed25519).
func LoadSigningKey(path string) (crypto.Signer, error) {
	m, err := keys.LoadMaterial(path, nil)
	if err != nil {
		return nil, err
	}
	s, ok := m.Private.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("flavor signing key %s: no RSA, ECDSA or Ed25519 private key in it", path)
	}
	return s, nil
}

// ImageFlavorRequest says what CreateImageFlavor does.
type ImageFlavorRequest struct {
	Label      string              // the flavor's label
	Input      string              // the plaintext image file
	Output     string              // the encrypted image file
	FlavorOut  string              // where the signed flavor goes
	BrokerURL  string              // the owner's broker
	Admin      *adminclient.Client // or nil to use AdminKeyFile
	SigningKey crypto.Signer       // signs the flavor; or nil to load SigningKeyFile

	AdminKeyFile   string // Ed25519 PKCS#8 PEM admin key of the broker
	SigningKeyFile string // PEM private key (RSA, ECDSA or Ed25519)

	// SecLFormat writes SecL's whole-file ISecL-VMC format (for SecL's
	// workload agent; images up to filecrypt.MaxSecLSize, held in memory)
	// instead of the streaming format.
	SecLFormat bool
}

// CreateImageFlavor creates a fresh 32-byte key in the broker (create-only,
// under a new UUID), encrypts Input to Output with filecrypt, and writes the
// signed flavor (key_url and the SHA-384 of Output) to FlavorOut. Both files
// are committed atomically; the flavor is written last, so a flavor never
// names a file that is not complete. It returns the flavor.
func CreateImageFlavor(ctx context.Context, r ImageFlavorRequest) (*flavor.Flavor, error) {
	if r.Admin == nil && r.AdminKeyFile != "" {
		k, err := adminclient.LoadKey(r.AdminKeyFile)
		if err != nil {
			return nil, err
		}
		if r.Admin, err = adminclient.New(r.BrokerURL, k); err != nil {
			return nil, err
		}
	}
	if r.SigningKey == nil && r.SigningKeyFile != "" {
		var err error
		if r.SigningKey, err = LoadSigningKey(r.SigningKeyFile); err != nil {
			return nil, err
		}
	}
	if r.Label == "" || r.Input == "" || r.Output == "" || r.FlavorOut == "" || r.Admin == nil || r.SigningKey == nil || r.BrokerURL == "" {
		return nil, errors.New("wpm: label, input, output, flavor output, broker, admin client and signing key are all required")
	}
	id := uuid.NewString()
	key := make([]byte, filecrypt.KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	defer clear(key)
	if err := r.Admin.CreateResource(ctx, flavor.KeyResource(id), key); err != nil {
		return nil, fmt.Errorf("wpm: creating the image key in the broker: %w", err)
	}
	fopts := []filecrypt.Option{filecrypt.WithMode(0o644)}
	if r.SecLFormat {
		fopts = append(fopts, filecrypt.WithSecLFormat())
	}
	res, err := filecrypt.EncryptFile(ctx, r.Input, r.Output, key, fopts...)
	if err != nil {
		return nil, fmt.Errorf("wpm: %w", err)
	}
	f, err := flavor.New(flavor.PartImage, r.Label, flavor.KeyURL(r.BrokerURL, id), base64.StdEncoding.EncodeToString(res.Digest))
	if err != nil {
		return nil, err
	}
	doc, err := flavor.Sign(f, r.SigningKey)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Write(r.FlavorOut, append(doc, '\n'), atomicfile.Mode(0o644)); err != nil {
		return nil, fmt.Errorf("wpm: %w", err)
	}
	return f, nil
}
