package sealed

import (
	"context"
	"crypto/aes"
	"fmt"
	"strings"

	josecipher "github.com/go-jose/go-jose/v4/cipher"

	"github.com/coffer-dev/coffer/spec"
)

// The "kbs" provider: the broker, through the unsealer's attested
// resource getter.
//
//   - vault (guest-components' VaultProvider::Kbs): the secret is the
//     resource Name (kbs:///repo/type/tag).
//   - envelope (a coffer extension; guest-components' kbs plugin is a
//     Getter only): KeyID is the kbs:/// resource of a 32-byte KEK and
//     EncryptedKey the DEK under it with AES key wrap (RFC 3394, A256KW).
func init() { Register("kbs", Provider{Vault: kbsVault, Unwrap: kbsUnwrap, Wrap: kbsWrap}) }

func kbsVault(ctx context.Context, env Env, s *Secret) ([]byte, error) {
	if env.Resource == nil {
		return nil, fmt.Errorf("provider kbs: no broker configured: %w", spec.ErrUnsupported)
	}
	return env.Resource(ctx, s.Name)
}

func kbsKeyID(id string) error {
	if !strings.HasPrefix(id, "kbs:///") || len(id) > maxURI {
		return badInput("envelope key_id %q: provider kbs wants kbs:///REPO/TYPE/TAG of a 32-byte key", trunc(id))
	}
	return nil
}

func kbsUnwrap(ctx context.Context, env Env, s *Secret, wrapped []byte) ([]byte, error) {
	if err := kbsKeyID(s.KeyID); err != nil {
		return nil, err
	}
	if len(wrapped) != 40 {
		return nil, badInput("envelope encrypted_key of %d bytes: A256KW of a 32-byte DEK is 40", len(wrapped))
	}
	if env.Resource == nil {
		return nil, fmt.Errorf("provider kbs: no broker configured: %w", spec.ErrUnsupported)
	}
	kek, err := env.Resource(ctx, s.KeyID)
	if err != nil {
		return nil, err
	}
	defer clear(kek)
	if len(kek) != 32 {
		return nil, fmt.Errorf("envelope key %s is %d bytes, want 32: %w", s.KeyID, len(kek), spec.ErrNoKey)
	}
	b, _ := aes.NewCipher(kek)
	dek, err := josecipher.KeyUnwrap(b, wrapped)
	if err != nil {
		return nil, fmt.Errorf("envelope key %s does not unwrap this secret's key: %w", s.KeyID, spec.ErrNoKey)
	}
	return dek, nil
}

func kbsWrap(s *Secret, kek, dek []byte) ([]byte, error) {
	if err := kbsKeyID(s.KeyID); err != nil {
		return nil, err
	}
	if len(kek) != 32 {
		return nil, fmt.Errorf("envelope key of %d bytes, want 32 (A256KW): %w", len(kek), spec.ErrUnsupported)
	}
	b, _ := aes.NewCipher(kek)
	return josecipher.KeyWrap(b, dek)
}

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
