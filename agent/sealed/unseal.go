package sealed

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/coffer-dev/coffer/spec"
)

var (
	// ErrMalformed marks input that is not a well-formed sealed secret
	// (a caller's error: ttrpc InvalidArgument, exit 2 class).
	ErrMalformed = fmt.Errorf("malformed input: %w", spec.ErrUnsupported)
	// ErrNoProvider marks a provider coffer has no client for (ttrpc
	// Unimplemented).
	ErrNoProvider = errors.New("no such provider in coffer")
)

func badInput(format string, a ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), ErrMalformed)
}

// Unsealer unseals sealed secrets.
type Unsealer struct {
	// Resource returns the broker's resource named by a kbs:/// URI: the
	// verification keys, vault secrets and envelope KEKs (an RCAR
	// client's resource.Getter, or the agent's GetResource).
	Resource func(ctx context.Context, uri string) ([]byte, error)
	// KeysDir holds local verification keys (JWK files named by kid);
	// "" accepts only kbs:/// kids.
	KeysDir string
}

// Unseal verifies sealed and returns its plaintext: for a vault secret
// what its provider holds under its name, for an envelope secret its
// data decrypted with the DEK its provider unwraps. Nothing of the
// payload is used before the signature verifies.
func (u Unsealer) Unseal(ctx context.Context, sealed []byte) ([]byte, error) {
	sec, err := ParseSealed(ctx, sealed, u.verificationKey)
	if err != nil {
		return nil, err
	}
	p, err := lookup(sec.Provider)
	if err != nil {
		return nil, err
	}
	env := Env{Resource: u.Resource}
	switch sec.Type {
	case "vault":
		if p.Vault == nil {
			return nil, fmt.Errorf("vault secret of provider %q: that provider only unwraps envelope keys: %w", sec.Provider, ErrNoProvider)
		}
		if sec.Name == "" || len(sec.Name) > maxURI {
			return nil, badInput("vault secret name must be 1 to %d bytes", maxURI)
		}
		return p.Vault(ctx, env, sec)
	case "envelope":
		if p.Unwrap == nil {
			return nil, fmt.Errorf("envelope secret of provider %q: that provider holds no envelope keys: %w", sec.Provider, ErrNoProvider)
		}
		return openEnvelope(ctx, env, p, sec)
	}
	return nil, badInput("sealed secret type %q: want vault or envelope", sec.Type)
}

// verificationKey returns the P-256 key named by kid: a kbs:/// resource,
// or a file in the local key directory (confined to it).
func (u Unsealer) verificationKey(ctx context.Context, kid string) (*ecdsa.PublicKey, error) {
	var data []byte
	if strings.HasPrefix(kid, "kbs:") || strings.HasPrefix(kid, "kbs+") {
		d, err := u.Resource(ctx, kid)
		if err != nil {
			return nil, err
		}
		data = d
	} else {
		if u.KeysDir == "" {
			return nil, badInput("kid %q is not a kbs:/// URI and no local key directory is configured", kid)
		}
		root, err := os.OpenRoot(u.KeysDir)
		if err != nil {
			return nil, err
		}
		defer root.Close()
		f, err := root.Open(kid)
		if err != nil {
			return nil, badInput("kid %q: %v", kid, err)
		}
		defer f.Close()
		if data, err = io.ReadAll(io.LimitReader(f, maxJWK+1)); err != nil {
			return nil, err
		}
	}
	return ParseVerificationKey(data)
}
