package server

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/coffer-dev/coffer/internal/httpserve"
	"github.com/coffer-dev/coffer/kbs/attest"
	"github.com/coffer-dev/coffer/kbs/policy"
	"github.com/coffer-dev/coffer/kbs/store"
	"github.com/coffer-dev/coffer/kbs/token"
)

// Config is the broker's configuration: the TOML file of `coffer kbs serve
// --config`, every key also a flag of that command.
type Config struct {
	Listen                string        `toml:"listen"`                  // default 127.0.0.1:8080
	Repository            string        `toml:"repository"`              // fs store directory; default store.DefaultRepositoryDir
	Store                 string        `toml:"store"`                   // "fs" (default; fs:///DIR names the directory), "memory" or a postgres:// URL: any scheme registered with store.Register
	StoreURLFile          string        `toml:"store_url_file"`          // file holding the postgres:// URL (a mounted secret), instead of store
	StoreKEK              string        `toml:"store_kek"`               // postgres: key-encryption key file (32 bytes raw, hex or base64)
	StoreKEKPrevious      string        `toml:"store_kek_previous"`      // postgres: the earlier KEK, still opened during a rotation
	StoreMaxConns         int           `toml:"store_max_conns"`         // postgres: connection pool size; 0 = URL's pool_max_conns or 16
	AdminPublicKeys       []string      `toml:"admin_public_keys"`       // Ed25519 PKIX PEM files
	AdminRole             string        `toml:"admin_role"`              // required role claim; "" = optional
	AdminACL              []string      `toml:"admin_acl"`               // "role=pattern[,pattern…]": tokens of role may only touch matching resource paths
	InsecureAdmin         bool          `toml:"insecure_admin"`          // development only
	TLSCert               string        `toml:"tls_cert"`                // PEM certificate chain
	TLSKey                string        `toml:"tls_key"`                 // PEM private key
	TokenKey              string        `toml:"token_key"`               // P-256 PEM; "" = generated at start
	TokenTTL              time.Duration `toml:"token_ttl"`               // default token.DefaultTTL
	TokenCert             string        `toml:"token_cert"`              // PEM chain (leaf first) certifying token_key: tokens carry it as x5c
	TrustedTokenCerts     []string      `toml:"trusted_token_certs"`     // PEM roots: also accept tokens whose x5c chain verifies to them
	SessionTTL            time.Duration `toml:"session_ttl"`             // default DefaultSessionTTL
	ResourcePolicyFile    string        `toml:"resource_policy_file"`    // initial resource policy (Rego)
	AttestationPolicyFile string        `toml:"attestation_policy_file"` // initial attestation policy (Rego)
	MaxBodyBytes          int64         `toml:"max_body_bytes"`          // default DefaultMaxBodyBytes
	MaxResourceBytes      int64         `toml:"max_resource_bytes"`      // default DefaultMaxResourceBytes
	ShutdownTimeout       time.Duration `toml:"shutdown_timeout"`        // default 10s
	StateDir              string        `toml:"state_dir"`               // admin-set policies and reference values; "" = memory only
	GCPercent             int           `toml:"gc_percent"`              // Go GC target for the serving process (coffer kbs serve); 0 = Go's default / GOGC
	RateLimit             float64       `toml:"rate_limit"`              // /auth + /attest calls per second per client address; 0 = off
	RateBurst             int           `toml:"rate_burst"`              // burst of the above
	MaxChallengesPerAddr  int           `toml:"max_challenges_per_address"`
	TrustedProxies        []string      `toml:"trusted_proxies"`     // addresses/CIDRs whose X-Forwarded-For counts (a WLS)
	AdminTokenMaxTTL      time.Duration `toml:"admin_token_max_ttl"` // longest admin token lifetime accepted; default token.AdminTTL
	AllowSampleTee        bool          `toml:"allow_sample_tee"`    // accept the sample TEE (no root of trust): development only
	Collateral            string        `toml:"collateral"`          // directory of SNP/TDX collateral (certificates, TCB info, QE identity)
	FetchCollateral       bool          `toml:"fetch_collateral"`    // allow fetching missing collateral from AMD KDS / Intel PCS
	AllowDebugTee         bool          `toml:"allow_debug_tee"`     // accept SNP/TDX guests with the debug policy bit set
	TPMEKCA               []string      `toml:"tpm_ek_ca"`           // PEM files of EK CAs: TPMs whose EK chains to one (and whose AK activates its credential) are trusted without an AK pin

	// Notes are what loading a trustee kbs-config.toml accepted but does
	// not act on (for the operator's log); not a file key.
	Notes []string `toml:"-"`
}

// Defaults of `coffer kbs serve` beyond the library's: a per-address rate
// on the unauthenticated endpoints that a node booting a few hundred pods
// at once stays under. Behind a proxy (one address for every client), set
// rate_limit = 0 and limit at the proxy.
const (
	DefaultServeRateLimit = 50
	DefaultServeRateBurst = 200
)

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Listen: "127.0.0.1:8080", Repository: store.DefaultRepositoryDir, Store: "fs",
		TokenTTL: token.DefaultTTL, SessionTTL: DefaultSessionTTL,
		MaxBodyBytes: DefaultMaxBodyBytes, MaxResourceBytes: DefaultMaxResourceBytes, ShutdownTimeout: 10 * time.Second,
		RateLimit: DefaultServeRateLimit, RateBurst: DefaultServeRateBurst,
		MaxChallengesPerAddr: DefaultMaxChallengesPerAddress, AdminTokenMaxTTL: token.AdminTTL,
	}
}

// Override copies into c the fields of o named by keys (their TOML keys,
// e.g. "rate_limit"): how command-line flags override a config file.
// An unknown key is an error.
func (c *Config) Override(o Config, keys ...string) error {
	dst, src := reflect.ValueOf(c).Elem(), reflect.ValueOf(o)
	byKey := map[string]int{}
	for i := range dst.NumField() {
		byKey[dst.Type().Field(i).Tag.Get("toml")] = i
	}
	for _, k := range keys {
		i, ok := byKey[k]
		if !ok {
			return fmt.Errorf("kbs config: no key %q", k)
		}
		dst.Field(i).Set(src.Field(i))
	}
	return nil
}

// LoadConfig reads the TOML file at path and parses it (ParseConfig).
// coffer kbs serve reads the file itself (internal/kbsfiles.LoadConfig).
func LoadConfig(path string) (Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return DefaultConfig(), fmt.Errorf("reading kbs config: %w", err)
	}
	return ParseConfig(path, raw)
}

// ParseConfig parses a TOML configuration over DefaultConfig; unknown
// keys are an error. It is coffer's flat layout or trustee's
// kbs-config.toml (trusteeconfig.go), told apart by trustee's tables;
// path names it in errors.
func ParseConfig(path string, raw []byte) (Config, error) {
	c := DefaultConfig()
	var probe map[string]any
	md, err := toml.Decode(string(raw), &probe)
	if err != nil {
		return c, fmt.Errorf("reading kbs config %s: %w", path, err)
	}
	if isTrusteeLayout(md) {
		return loadTrusteeConfig(path, raw)
	}
	md, err = toml.Decode(string(raw), &c)
	if err != nil {
		return c, fmt.Errorf("reading kbs config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return c, fmt.Errorf("kbs config %s: unknown keys %v", path, und)
	}
	return c, nil
}

// Files is what the files a Config names hold (the store URL of
// store_url_file, keys, certificates, policies), read by the program and
// handed to Options and Serve as values: this package reads none of them
// (coffer kbs serve reads them with internal/kbsfiles). Each file c names
// must have its contents here. Still opened by name: tls_cert/tls_key (by
// the listener) and the postgres store's KEK files (by its driver).
type Files struct {
	StoreURL        string   // store_url_file's contents ("" = Config.Store)
	AdminPublicKeys [][]byte // admin_public_keys' PEM, in order
	TokenKey        []byte   // token_key's PEM (nil: a key generated at start)
	// TokenSigner is token_key opened as a P-256 crypto.Signer whose key
	// stays elsewhere (a PKCS#11 token: keywrap/pkcs11.Signer), instead of
	// TokenKey's PEM.
	TokenSigner       crypto.Signer
	TokenCert         []byte   // token_cert's PEM chain
	TrustedTokenCerts [][]byte // trusted_token_certs' PEM, in order
	ResourcePolicy    []byte   // resource_policy_file's Rego (nil: the default)
	AttestationPolicy []byte   // attestation_policy_file's Rego (nil: the default)
	TPMEKCA           [][]byte // tpm_ek_ca's PEM, in order
}

// check refuses Files that lack the contents of a file c names.
func (f Files) check(c Config) error {
	missing := func(key string) error {
		return fmt.Errorf("kbs config: %s is named but its contents were not given (server.Files)", key)
	}
	switch {
	case c.StoreURLFile != "" && f.StoreURL == "":
		return missing("store_url_file")
	case len(f.AdminPublicKeys) != len(c.AdminPublicKeys):
		return missing("admin_public_keys")
	case c.TokenKey != "" && f.TokenKey == nil && f.TokenSigner == nil:
		return missing("token_key")
	case c.TokenCert != "" && f.TokenCert == nil:
		return missing("token_cert")
	case len(f.TrustedTokenCerts) != len(c.TrustedTokenCerts):
		return missing("trusted_token_certs")
	case c.ResourcePolicyFile != "" && f.ResourcePolicy == nil:
		return missing("resource_policy_file")
	case c.AttestationPolicyFile != "" && f.AttestationPolicy == nil:
		return missing("attestation_policy_file")
	case len(f.TPMEKCA) != len(c.TPMEKCA):
		return missing("tpm_ek_ca")
	}
	return nil
}

// Options turns the configuration and the contents of its files into
// server options, opening the store it names (store.Open).
func (c Config) Options(ctx context.Context, f Files, logger *slog.Logger) ([]Option, func() error, error) {
	closer := func() error { return nil }
	if err := f.check(c); err != nil {
		return nil, closer, err
	}
	var opts []Option
	storeURL := c.Store
	if c.StoreURLFile != "" {
		storeURL = strings.TrimSpace(f.StoreURL)
		if !strings.Contains(storeURL, "://") {
			return nil, closer, fmt.Errorf("store URL file %s: want a store URL such as postgres://…", c.StoreURLFile)
		}
	}
	// Stores open by URL scheme through the drivers linked into the
	// program (store.Register); this package links none but fs and memory.
	d, ok := store.Lookup(storeURL)
	if !ok {
		return nil, closer, fmt.Errorf("kbs config: store %q: want one of %s (as a URL where it takes one)", store.Redact(storeURL), strings.Join(store.Schemes(), ", "))
	}
	sp := store.Params{Repository: c.Repository, KEKFile: c.StoreKEK,
		PreviousKEKFile: c.StoreKEKPrevious, MaxConns: c.StoreMaxConns, Logger: logger}
	if d.Check != nil {
		if err := d.Check(sp); err != nil {
			return nil, closer, err
		}
	}
	if d.Shared {
		name := store.Scheme(storeURL)
		if c.StateDir != "" {
			return nil, closer, fmt.Errorf("kbs config: state_dir is for the fs and memory stores; the %s store keeps policies and reference values itself", name)
		}
		if c.TokenKey == "" {
			return nil, closer, fmt.Errorf("kbs config: the %s store (shared by replicas) needs token_key (--token-key FILE): every replica must sign tokens with the same key, or a token from one fails on another", name)
		}
	}
	if len(c.AdminACL) > 0 {
		if _, err := ParseAdminACL(c.AdminACL); err != nil {
			return nil, closer, err
		}
	}
	var keys []ed25519.PublicKey
	for i, raw := range f.AdminPublicKeys {
		k, err := token.ParseAdminPublicKey(raw)
		if err != nil {
			return nil, closer, fmt.Errorf("admin public key %s: %w", c.AdminPublicKeys[i], err)
		}
		keys = append(keys, k)
	}
	var (
		signer *token.Signer
		err    error
	)
	switch {
	case f.TokenSigner != nil:
		// token_key may be a pkcs11: URI holding a PIN: not in messages.
		if signer, err = token.NewSignerFrom(f.TokenSigner, "", c.TokenTTL); err != nil {
			return nil, closer, fmt.Errorf("token key %s: %w", signerName(f.TokenSigner), err)
		}
	case c.TokenKey != "":
		k, err := token.LoadSigningKey(f.TokenKey)
		if err != nil {
			return nil, closer, fmt.Errorf("token key %s: %w", c.TokenKey, err)
		}
		if signer, err = token.NewSigner(k, "", c.TokenTTL); err != nil {
			return nil, closer, err
		}
	default:
		if signer, err = token.NewSigner(nil, "", c.TokenTTL); err != nil {
			return nil, closer, err
		}
	}
	if c.TokenCert != "" {
		if c.TokenKey == "" {
			return nil, closer, fmt.Errorf("kbs config: token_cert needs the token_key it certifies")
		}
		var chain []*x509.Certificate
		for blk, rest := pem.Decode(f.TokenCert); blk != nil; blk, rest = pem.Decode(rest) {
			cert, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, closer, fmt.Errorf("token certificate %s: %w", c.TokenCert, err)
			}
			chain = append(chain, cert)
		}
		if err := signer.SetCertChain(chain); err != nil {
			return nil, closer, fmt.Errorf("token certificate %s: %w", c.TokenCert, err)
		}
	}
	if len(f.TrustedTokenCerts) > 0 {
		is, err := token.NewTrustedIssuers(f.TrustedTokenCerts...)
		if err != nil {
			return nil, closer, err
		}
		opts = append(opts, WithTrustedIssuers(is))
	}
	engine, err := policy.New(ctx)
	if err != nil {
		return nil, closer, err
	}
	if c.ResourcePolicyFile != "" {
		if err := engine.SetResourcePolicy(ctx, string(f.ResourcePolicy)); err != nil {
			return nil, closer, fmt.Errorf("resource policy %s: %w", c.ResourcePolicyFile, err)
		}
	}
	if c.AttestationPolicyFile != "" {
		if err := engine.SetAttestationPolicy(ctx, token.DefaultAppraisalPolicy, string(f.AttestationPolicy)); err != nil {
			return nil, closer, fmt.Errorf("attestation policy %s: %w", c.AttestationPolicyFile, err)
		}
	}
	if len(c.AdminACL) > 0 {
		acl, _ := ParseAdminACL(c.AdminACL) // checked above
		opts = append(opts, WithAdminACL(acl))
	}
	// The store is opened last, once everything else is known good.
	st, err := store.Open(ctx, storeURL, sp)
	if err != nil {
		return nil, closer, err
	}
	if cl, ok := st.(io.Closer); ok {
		closer = cl.Close
	}
	opts = append(opts, WithStore(st))
	opts = append(opts, WithAdminKeys(keys...), WithAdminRole(c.AdminRole), WithInsecureAdmin(c.InsecureAdmin),
		WithSigner(signer), WithPolicy(engine), WithLogger(logger), WithStateDir(c.StateDir))
	if c.SessionTTL > 0 {
		opts = append(opts, WithSessionTTL(c.SessionTTL))
	}
	if c.MaxBodyBytes > 0 {
		opts = append(opts, WithMaxBodyBytes(c.MaxBodyBytes))
	}
	if c.MaxResourceBytes > 0 {
		opts = append(opts, WithMaxResourceBytes(c.MaxResourceBytes))
	}
	if c.AllowSampleTee {
		logger.Warn("SAMPLE TEE ACCEPTED (allow_sample_tee): evidence with no hardware root of trust can attest; never use this outside development")
	}
	if c.AllowDebugTee {
		logger.Warn("debug-enabled SNP/TDX guests accepted (allow_debug_tee): their memory is readable by the host")
	}
	ekRoots, err := attest.ParseEKRoots(c.TPMEKCA, f.TPMEKCA)
	if err != nil {
		return nil, closer, err
	}
	opts = append(opts, WithVerifiers(attest.New(attest.Config{AllowSample: c.AllowSampleTee, Collateral: c.Collateral,
		FetchCollateral: c.FetchCollateral, AllowDebug: c.AllowDebugTee, EKRoots: ekRoots})))
	opts = append(opts, WithRateLimit(c.RateLimit, c.RateBurst))
	if c.MaxChallengesPerAddr > 0 {
		opts = append(opts, WithMaxChallengesPerAddress(c.MaxChallengesPerAddr))
	}
	if len(c.TrustedProxies) > 0 {
		opts = append(opts, WithTrustedProxies(c.TrustedProxies...))
	}
	if c.AdminTokenMaxTTL > 0 {
		opts = append(opts, WithAdminTokenMaxTTL(c.AdminTokenMaxTTL))
	}
	return opts, closer, nil
}

// storeName names the configured store for logs, without a password.
func storeName(c Config) string {
	if c.StoreURLFile != "" {
		return "postgres URL from " + c.StoreURLFile
	}
	return store.Redact(c.Store)
}

// signerName names a signer for messages by its String (keywrap/pkcs11's
// is its URI without the query: no PIN), never by its fields.
func signerName(s crypto.Signer) string {
	if n, ok := s.(fmt.Stringer); ok {
		return n.String()
	}
	return fmt.Sprintf("(%T)", s)
}

// ParseAdminACL parses "role=pattern[,pattern…]" entries (a role may
// appear in several) into WithAdminACL's map.
func ParseAdminACL(entries []string) (map[string][]string, error) {
	acl := map[string][]string{}
	for _, e := range entries {
		role, pats, ok := strings.Cut(e, "=")
		if !ok || role == "" || pats == "" {
			return nil, fmt.Errorf("kbs config: admin acl %q: want role=pattern[,pattern...], e.g. tenant-a=tenant-a/*/*", e)
		}
		acl[role] = append(acl[role], strings.Split(pats, ",")...)
	}
	return acl, nil
}

// Serve runs the broker described by c and the contents of its files f
// until ctx is cancelled, then shuts down gracefully (in-flight requests
// get c.ShutdownTimeout). ready, if not nil, receives the bound address
// once listening.
func Serve(ctx context.Context, c Config, f Files, logger *slog.Logger, ready func(addr net.Addr)) error {
	if logger == nil {
		logger = slog.Default()
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("kbs config: tls_cert and tls_key go together")
	}
	opts, closeStore, err := c.Options(ctx, f, logger)
	if err != nil {
		return err
	}
	defer closeStore()
	srv, err := New(ctx, opts...)
	if err != nil {
		return err
	}
	defer srv.Close()
	hc := httpserve.Config{Name: "kbs", Addr: c.Listen, TLSCert: c.TLSCert, TLSKey: c.TLSKey, ShutdownTimeout: c.ShutdownTimeout}
	ln, err := httpserve.Listen(hc)
	if err != nil {
		return err
	}
	if c.TLSCert == "" && !isLoopback(ln.Addr().String()) {
		logger.Warn("kbs serving plain HTTP on a non-loopback address: admin calls from other hosts are refused; configure tls_cert/tls_key")
	}
	logger.Info("kbs listening", "addr", ln.Addr().String(), "tls", c.TLSCert != "", "store", storeName(c), "repository", c.Repository)
	if ready != nil {
		ready(ln.Addr())
	}
	err = httpserve.Serve(ctx, ln, srv, hc)
	logger.Info("kbs stopped")
	return err
}
