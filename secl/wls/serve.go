package wls

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/coffer-dev/coffer/internal/httpserve"
	"github.com/coffer-dev/coffer/kbs/token"
	"github.com/coffer-dev/coffer/secl/flavor"
)

// Config is what `coffer wls serve` runs.
type Config struct {
	Listen          string   // address, default 127.0.0.1:5080 (a local registry usually has 5000)
	DB              string   // store directory
	SignerCerts     []string // PEM files of the trusted flavor signers
	AdminPublicKeys []string // PEM files of Ed25519 admin public keys
	InsecureAdmin   bool     // development only
	TLSCert, TLSKey string   // PEM files; both or neither
	AllowedBrokers  []string // brokers hosts may ask keys of by URL, besides those flavors name
	RateLimit       float64  // host key requests per second per client address (0 = off)
	RateBurst       int
	MaxPending      int // unanswered broker challenges per client address (0 = DefaultMaxPendingPerCaller)
	MaxPerBroker    int // unanswered broker challenges of all callers per broker (0 = DefaultMaxPendingPerBroker)
	// BrokerRate and BrokerBurst set the fair gate for calls to each
	// broker (WithBrokerRate); BrokerRate < 0 turns it off.
	BrokerRate  float64
	BrokerBurst int
}

// Serve runs the workload service described by c until ctx ends. ready,
// if not nil, receives the bound address.
func Serve(ctx context.Context, c Config, logger *slog.Logger, ready func(net.Addr)) error {
	if logger == nil {
		logger = slog.Default()
	}
	if c.DB == "" {
		return errors.New("wls: a store directory (--db) is required")
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("wls: --tls-cert and --tls-key go together")
	}
	if len(c.SignerCerts) == 0 {
		return errors.New("wls: --flavor-signer-cert is required: the service refuses unsigned flavors")
	}
	signers, err := flavor.LoadSigners(c.SignerCerts...)
	if err != nil {
		return err
	}
	var keys []ed25519.PublicKey
	for _, p := range c.AdminPublicKeys {
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("wls admin public key: %w", err)
		}
		k, err := token.ParseAdminPublicKey(b)
		if err != nil {
			return fmt.Errorf("wls admin public key %s: %w", p, err)
		}
		keys = append(keys, k)
	}
	store, err := OpenStore(c.DB)
	if err != nil {
		return err
	}
	defer store.Close()
	opts := []Option{WithFlavorSigners(signers...), WithAdminKeys(keys...), WithInsecureAdmin(c.InsecureAdmin), WithLogger(logger),
		WithAllowedBrokers(c.AllowedBrokers...), WithRateLimit(c.RateLimit, c.RateBurst)}
	if c.MaxPending > 0 {
		opts = append(opts, WithMaxPendingPerCaller(c.MaxPending))
	}
	if c.MaxPerBroker > 0 {
		opts = append(opts, WithMaxPendingPerBroker(c.MaxPerBroker))
	}
	switch {
	case c.BrokerRate < 0:
		opts = append(opts, WithBrokerRate(0, 0))
	case c.BrokerRate > 0:
		opts = append(opts, WithBrokerRate(c.BrokerRate, c.BrokerBurst))
	}
	srv, err := New(store, opts...)
	if err != nil {
		return err
	}
	addr := c.Listen
	if addr == "" {
		addr = "127.0.0.1:5080"
	}
	// Key requests wait on the owner's broker: a longer write bound than the broker's own.
	hc := httpserve.Config{Name: "wls", Addr: addr, TLSCert: c.TLSCert, TLSKey: c.TLSKey, WriteTimeout: 2 * time.Minute}
	ln, err := httpserve.Listen(hc)
	if err != nil {
		return err
	}
	logger.Info("wls listening", "addr", ln.Addr().String(), "tls", c.TLSCert != "", "db", c.DB)
	if ready != nil {
		ready(ln.Addr())
	}
	return httpserve.Serve(ctx, ln, srv, hc)
}
