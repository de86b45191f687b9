package wla

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/coffer-dev/coffer/keywrap/keyprovider"
	"github.com/coffer-dev/coffer/secl/wls"
	"github.com/coffer-dev/coffer/secl/wpm"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/tpm"
)

// KeyProvider is the host's ocicrypt keyprovider for SecL's provider.isecl
// layers (`coffer wla keyprovider`, CRI-O/containerd call it over gRPC):
// keyunwrap reads the key URL from the annotation, gets the key through
// the workload service sealed to this host's TPM (Prove), unbinds it in
// the TPM and opens the layer options. Keys live only in memory: for one
// call, or for CacheTTL when set (the layers of one image share a key, so
// one attestation serves the whole pull); a restart forgets them all.
type KeyProvider struct {
	WLS      *wls.Client
	TPM      *tpm.TPM
	CacheTTL time.Duration // 0: no cache

	mu    sync.Mutex
	cache map[string]cachedKey
}

type cachedKey struct {
	key     []byte
	expires time.Time
}

// maxCachedKeys bounds the cache; when full, expired keys go first, then all.
const maxCachedKeys = 64

func (k *KeyProvider) cached(keyURL string, now time.Time) []byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	for u, c := range k.cache {
		if !now.Before(c.expires) {
			clear(c.key)
			delete(k.cache, u)
		}
	}
	if c, ok := k.cache[keyURL]; ok {
		return append([]byte(nil), c.key...)
	}
	return nil
}

func (k *KeyProvider) remember(keyURL string, key []byte, now time.Time) {
	if k.CacheTTL <= 0 {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cache == nil {
		k.cache = map[string]cachedKey{}
	}
	if len(k.cache) >= maxCachedKeys {
		for u, c := range k.cache {
			clear(c.key)
			delete(k.cache, u)
		}
	}
	k.cache[keyURL] = cachedKey{key: append([]byte(nil), key...), expires: now.Add(k.CacheTTL)}
}

// WrapKey implements keyprovider.Handler: a host does not wrap.
func (k *KeyProvider) WrapKey(context.Context, map[string][][]byte, []byte) ([]byte, error) {
	return nil, fmt.Errorf("the host keyprovider only unwraps (the owner wraps with coffer wpm get-ocicrypt-wrappedkey): %w", spec.ErrUnsupported)
}

// UnwrapKey implements keyprovider.Handler.
func (k *KeyProvider) UnwrapKey(ctx context.Context, _ map[string][][]byte, annotation []byte) ([]byte, error) {
	p, err := wpm.ParseAnnotation(annotation)
	if err != nil {
		return nil, err
	}
	if key := k.cached(p.KeyURL, time.Now()); key != nil {
		defer clear(key)
		return p.Open(key)
	}
	ch, err := k.WLS.KeyChallenge(ctx, p.KeyURL)
	if err != nil {
		return nil, err
	}
	kr, err := Prove(ctx, k.TPM, ch)
	if err != nil {
		return nil, err
	}
	wrapped, err := k.WLS.Key(ctx, p.KeyURL, *kr)
	if err != nil {
		return nil, err
	}
	key, err := k.TPM.Unbind(ctx, wrapped)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	opts, err := p.Open(key)
	if err == nil {
		k.remember(p.KeyURL, key, time.Now())
	}
	return opts, err
}

// KeyproviderConfig is what `coffer wla keyprovider` serves.
type KeyproviderConfig struct {
	Listen  string // host:port of the gRPC service, default 127.0.0.1:50051
	WLS     string // workload service URL
	TPMAddr string // tpm.Open's address
	// CacheTTL keeps an unwrapped layer key in memory this long (0: none).
	CacheTTL time.Duration
}

// ServeKeyprovider serves the keyprovider gRPC service
// (keyprovider.KeyProviderService, ocicrypt's) until ctx ends. ready, if
// not nil, receives the bound address.
func ServeKeyprovider(ctx context.Context, c KeyproviderConfig, logger *slog.Logger, ready func(net.Addr)) error {
	if logger == nil {
		logger = slog.Default()
	}
	if c.WLS == "" {
		return fmt.Errorf("wla keyprovider: a workload service URL is required")
	}
	t, err := tpm.Open(ctx, c.TPMAddr)
	if err != nil {
		return fmt.Errorf("wla keyprovider: %w", err)
	}
	defer t.Close()
	addr := c.Listen
	if addr == "" {
		addr = "127.0.0.1:50051"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("wla keyprovider: %w", err)
	}
	s := grpc.NewServer()
	keyprovider.RegisterGRPC(s, &KeyProvider{WLS: wls.NewClient(c.WLS, nil, nil), TPM: t, CacheTTL: c.CacheTTL})
	logger.Info("wla keyprovider listening", "addr", ln.Addr().String(), "wls", c.WLS)
	if ready != nil {
		ready(ln.Addr())
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		s.GracefulStop()
		return nil
	}
}
