// Package keygen makes recipient key pairs: ML-KEM-768 (post-quantum, AKP
// JWKs for the mlkem recipient scheme), EC P-256 and RSA-3072 (PEM, for
// jwe and pkcs7), and writes them without overwriting anything.
package keygen

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/mlkem"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/coffer-dev/coffer/internal/atomicfile"
	cmlkem "github.com/coffer-dev/coffer/keywrap/mlkem"
	"github.com/coffer-dev/coffer/spec"
)

// Key types Generate makes.
const (
	MLKEM768 = "mlkem768" // recipient mlkem:FILE.pub
	ECP256   = "ec-p256"  // recipient jwe:FILE.pub
	RSA3072  = "rsa-3072" // recipient jwe:FILE.pub
)

// Types lists the key types, default first.
var Types = []string{MLKEM768, ECP256, RSA3072}

// Option configures Generate.
type Option func(*options)

type options struct{ kid string }

// WithKeyID names the key ("kid" of an ML-KEM JWK; ignored for PEM keys).
func WithKeyID(kid string) Option { return func(o *options) { o.kid = kid } }

// Pair is a generated key pair, serialized.
type Pair struct {
	// Private is the private key file's content (keep it 0600).
	Private []byte
	// Public is the recipient file's content.
	Public []byte
}

// Generate makes a key pair of type typ (one of Types).
func Generate(ctx context.Context, typ string, opts ...Option) (Pair, error) {
	if err := ctx.Err(); err != nil {
		return Pair{}, err
	}
	var o options
	for _, f := range opts {
		f(&o)
	}
	switch typ {
	case MLKEM768:
		dk, err := mlkem.GenerateKey768()
		if err != nil {
			return Pair{}, err
		}
		priv, err := cmlkem.MarshalPrivateKey(dk, o.kid)
		if err != nil {
			return Pair{}, err
		}
		pub, err := cmlkem.MarshalPublicKey(dk.EncapsulationKey(), o.kid)
		return Pair{Private: append(priv, '\n'), Public: append(pub, '\n')}, err
	case ECP256:
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return Pair{}, err
		}
		return pemPair(k, &k.PublicKey)
	case RSA3072:
		k, err := rsa.GenerateKey(rand.Reader, 3072)
		if err != nil {
			return Pair{}, err
		}
		return pemPair(k, &k.PublicKey)
	}
	return Pair{}, fmt.Errorf("key type %q: want one of %v: %w", typ, Types, spec.ErrUnsupported)
}

func pemPair(priv, pub any) (Pair, error) {
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return Pair{}, err
	}
	defer clear(der)
	pder, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return Pair{}, err
	}
	return Pair{
		Private: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		Public:  pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pder}),
	}, nil
}

// Write commits the pair: the private key at privPath (0600) and the
// public key at pubPath (0644). Neither may exist (spec.ErrExists, nothing
// written); a failure after the private key is written removes it.
func (p Pair) Write(privPath, pubPath string) error {
	for _, path := range []string{privPath, pubPath} {
		if _, err := os.Lstat(path); err == nil {
			return fmt.Errorf("%s exists: keys are never overwritten (choose another --out): %w", path, spec.ErrExists)
		}
	}
	if err := atomicfile.Write(privPath, p.Private, atomicfile.Mode(0o600), atomicfile.NoReplace()); err != nil {
		return exists(privPath, err)
	}
	if err := atomicfile.Write(pubPath, p.Public, atomicfile.Mode(0o644), atomicfile.NoReplace()); err != nil {
		os.Remove(privPath)
		return exists(pubPath, err)
	}
	return nil
}

// exists maps a create-only write that lost a race to spec.ErrExists.
func exists(path string, err error) error {
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists: keys are never overwritten (choose another --out): %w", path, spec.ErrExists)
	}
	return err
}

// Clear wipes the private key's bytes.
func (p Pair) Clear() { clear(p.Private) }
