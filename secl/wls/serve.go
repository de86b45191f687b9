package wls

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/coffer-dev/coffer/kbs/token"
	"github.com/coffer-dev/coffer/secl/flavor"
)

// Config is what `coffer wls serve` runs.
type Config struct {
	Listen          string   // address, default 127.0.0.1:5000
	DB              string   // store directory
	SignerCerts     []string // PEM files of the trusted flavor signers
	AdminPublicKeys []string // PEM files of Ed25519 admin public keys
	InsecureAdmin   bool     // development only
	TLSCert, TLSKey string   // PEM files; both or neither
	AllowedBrokers  []string // brokers hosts may ask keys of by URL, besides those flavors name
	RateLimit       float64  // host key requests per second per client address (0 = off)
	RateBurst       int
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
	srv, err := New(store, WithFlavorSigners(signers...), WithAdminKeys(keys...), WithInsecureAdmin(c.InsecureAdmin), WithLogger(logger), WithAllowedBrokers(c.AllowedBrokers...), WithRateLimit(c.RateLimit, c.RateBurst))
	if err != nil {
		return err
	}
	addr := c.Listen
	if addr == "" {
		addr = "127.0.0.1:5000"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("wls listen: %w", err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 2 * time.Minute, IdleTimeout: 120 * time.Second, MaxHeaderBytes: 64 << 10}
	if c.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			ln.Close()
			return fmt.Errorf("wls tls: %w", err)
		}
		hs.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, hs.TLSConfig)
	}
	logger.Info("wls listening", "addr", ln.Addr().String(), "tls", c.TLSCert != "", "db", c.DB)
	if ready != nil {
		ready(ln.Addr())
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("wls shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
