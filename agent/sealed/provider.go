package sealed

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
)

// Env is what a provider may use: the broker, through the unsealer's
// resource getter.
type Env struct {
	Resource func(ctx context.Context, uri string) ([]byte, error)
}

// Provider is one secret provider (guest-components' KMS plugins: a
// vault Getter, an envelope Decrypter, or both). A provider is a file
// of its own that calls Register.
type Provider struct {
	// Vault returns the secret a vault-type Secret names.
	Vault func(ctx context.Context, env Env, s *Secret) ([]byte, error)
	// Unwrap returns the DEK of an envelope-type Secret: its
	// EncryptedKey (decoded from base64) unwrapped with key s.KeyID.
	Unwrap func(ctx context.Context, env Env, s *Secret, wrapped []byte) ([]byte, error)
	// Wrap is the sealing side of Unwrap: it wraps dek with kek (the
	// provider's key material the sealer holds) for s.KeyID.
	Wrap func(s *Secret, kek, dek []byte) ([]byte, error)
}

var (
	providersMu sync.RWMutex
	providers   = map[string]Provider{}
)

// Register adds a provider under name (matched case-insensitively, as
// guest-components' provider enums are). It panics on a duplicate, as
// database/sql's Register does.
func Register(name string, p Provider) {
	providersMu.Lock()
	defer providersMu.Unlock()
	k := strings.ToLower(name)
	if _, dup := providers[k]; dup {
		panic("sealed: provider " + name + " registered twice")
	}
	providers[k] = p
}

// Providers lists the registered providers' names.
func Providers() []string {
	providersMu.RLock()
	defer providersMu.RUnlock()
	var n []string
	for k := range providers {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

func lookup(name string) (Provider, error) {
	providersMu.RLock()
	p, ok := providers[strings.ToLower(name)]
	providersMu.RUnlock()
	if !ok {
		if len(name) > 64 {
			name = name[:64] + "…"
		}
		return Provider{}, fmt.Errorf("secret provider %q: coffer has providers %s (guest-components' cloud KMS plugins aliyun, aws and ehsm need their vendors' services): %w", name, strings.Join(Providers(), ", "), ErrNoProvider)
	}
	return p, nil
}
