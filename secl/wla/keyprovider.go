package wla

import (
	"context"
	"crypto/ecdsa"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/coffer-dev/coffer/agent/api"

	"github.com/coffer-dev/coffer/keywrap/keyprovider"
	"github.com/coffer-dev/coffer/secl/flavor"
	"github.com/coffer-dev/coffer/secl/wlsclient"
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
	WLS        *wlsclient.Client
	TPM        *tpm.TPM
	BrokerKeys []*ecdsa.PublicKey // the brokers' transfer keys (required: CheckTransfer)
	CacheTTL   time.Duration      // 0: no cache

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
	if len(k.BrokerKeys) == 0 {
		return nil, fmt.Errorf("%w: no broker transfer key pinned", ErrNoTrustAnchor)
	}
	p, err := flavor.ParseAnnotation(annotation)
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
	rk, err := k.WLS.Key(ctx, p.KeyURL, *kr)
	if err != nil {
		return nil, err
	}
	_, keyID, err := flavor.ParseKeyURL(p.KeyURL)
	if err != nil {
		return nil, err
	}
	if err := CheckTransfer(rk.Proof, k.BrokerKeys, kr, keyID, rk.Key, time.Now()); err != nil {
		return nil, err
	}
	key, err := k.TPM.Unbind(ctx, rk.Key)
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

// DefaultKeyproviderSocket is where `coffer wla keyprovider` listens by
// default: a unix socket (0600, owner only), as `coffer agent` does.
const DefaultKeyproviderSocket = "unix:///run/coffer/wla-keyprovider.sock"

// KeyproviderConfig is what `coffer wla keyprovider` serves.
type KeyproviderConfig struct {
	// Listen is "unix:PATH" (default DefaultKeyproviderSocket; the socket
	// is 0600) or host:port, which needs TCPTokenFile.
	Listen string
	// TCPTokenFile holds the bearer token (one line, file mode 0600 or
	// stricter) every call over TCP must carry as gRPC metadata
	// "authorization: Bearer <token>". Required for TCP, unused for unix.
	TCPTokenFile string
	WLS          string             // workload service URL (https; http only to loopback with LoopbackHTTP)
	LoopbackHTTP bool               // allow an http:// WLS on a loopback address (tests, demos)
	TPMAddr      string             // tpm.Open's address
	BrokerKeys   []*ecdsa.PublicKey // the brokers' transfer keys (required)
	// CacheTTL keeps an unwrapped layer key in memory this long (0: none).
	CacheTTL time.Duration
}

// ReadTokenFile reads a bearer token file, refusing one others can read.
func ReadTokenFile(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("token file %s is mode %o: it must be readable by its owner only (chmod 600): %w", path, fi.Mode().Perm(), spec.ErrUnsupported)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < 16 {
		return "", fmt.Errorf("token file %s: a token of at least 16 characters is required: %w", path, spec.ErrUnsupported)
	}
	return tok, nil
}

// bearerAuth refuses gRPC calls without "authorization: Bearer <token>".
func bearerAuth(token string) grpc.UnaryServerInterceptor {
	want := []byte("Bearer " + token)
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		var got []byte
		if v := md.Get("authorization"); len(v) == 1 {
			got = []byte(v[0])
		}
		if subtle.ConstantTimeCompare(got, want) != 1 {
			return nil, status.Error(codes.Unauthenticated, "wla keyprovider over TCP: missing or wrong bearer token")
		}
		return h(ctx, req)
	}
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
	if err := wlsclient.CheckURL(c.WLS, c.LoopbackHTTP); err != nil {
		return fmt.Errorf("wla keyprovider: %w", err)
	}
	if len(c.BrokerKeys) == 0 {
		return fmt.Errorf("wla keyprovider: %w: no broker transfer key pinned", ErrNoTrustAnchor)
	}
	addr := c.Listen
	if addr == "" {
		addr = DefaultKeyproviderSocket
	}
	var opts []grpc.ServerOption
	if !strings.HasPrefix(addr, "unix:") {
		if c.TCPTokenFile == "" {
			return fmt.Errorf("wla keyprovider: listening on TCP %s needs a bearer token file (anyone who can connect would get keys unwrapped by this TPM): %w", addr, spec.ErrUnsupported)
		}
		tok, err := ReadTokenFile(c.TCPTokenFile)
		if err != nil {
			return fmt.Errorf("wla keyprovider: %w", err)
		}
		opts = append(opts, grpc.UnaryInterceptor(bearerAuth(tok)))
	}
	t, err := tpm.Open(ctx, c.TPMAddr)
	if err != nil {
		return fmt.Errorf("wla keyprovider: %w", err)
	}
	defer t.Close()
	ln, err := api.Listen(addr)
	if err != nil {
		return fmt.Errorf("wla keyprovider: %w", err)
	}
	s := grpc.NewServer(opts...)
	keyprovider.RegisterGRPC(s, &KeyProvider{WLS: wlsclient.NewClient(c.WLS, nil, nil), TPM: t, BrokerKeys: c.BrokerKeys, CacheTTL: c.CacheTTL})
	logger.Info("wla keyprovider listening", "addr", ln.Addr().String(), "wls", c.WLS, "tcp_auth", len(opts) > 0)
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
