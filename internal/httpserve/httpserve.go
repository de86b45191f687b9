// Package httpserve is the one way coffer's network daemons (the broker,
// the workload service) listen and serve HTTP: optional TLS from PEM files,
// bounded headers and timeouts for clients that are hostile, and a graceful
// shutdown when the context ends.
package httpserve

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Config says where and how to listen.
type Config struct {
	Name            string        // what errors are prefixed with: "kbs", "wls"
	Addr            string        // host:port
	TLSCert, TLSKey string        // PEM files; plain HTTP when TLSCert is ""
	WriteTimeout    time.Duration // per response; default 30s
	ShutdownTimeout time.Duration // for in-flight requests once ctx ends; default 10s
}

// Listen binds c.Addr, wrapped in TLS when c.TLSCert is set.
func Listen(c Config) (net.Listener, error) {
	ln, err := net.Listen("tcp", c.Addr)
	if err != nil {
		return nil, fmt.Errorf("%s listen: %w", c.Name, err)
	}
	if c.TLSCert == "" {
		return ln, nil
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("%s tls: %w", c.Name, err)
	}
	return tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}), nil
}

// Serve serves h on ln until ctx ends, then lets in-flight requests finish
// (for at most c.ShutdownTimeout) and returns nil; a failure to serve is
// returned at once.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, c Config) error {
	wt := c.WriteTimeout
	if wt <= 0 {
		wt = 30 * time.Second
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: wt, IdleTimeout: 120 * time.Second, MaxHeaderBytes: 64 << 10}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	timeout := c.ShutdownTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("%s shutdown: %w", c.Name, err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
