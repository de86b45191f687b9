// Package agent runs coffer's guest agent: the Confidential Containers
// REST API (CDH resources, AA token and evidence; package api) and the
// ocicrypt keyprovider gRPC service, both backed by the broker through the
// RCAR client. Serve mirrors kbs/server.Serve.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc"

	"github.com/coffer-dev/coffer/agent/api"
	"github.com/coffer-dev/coffer/agent/client"
	"github.com/coffer-dev/coffer/agent/evidence"
	agentttrpc "github.com/coffer-dev/coffer/agent/ttrpc"
	"github.com/coffer-dev/coffer/keywrap/aa"
	"github.com/coffer-dev/coffer/keywrap/keyprovider"
	"github.com/coffer-dev/coffer/spec"
)

// ErrConfig marks a Config that cannot be served (the CLI reports it as a usage error).
var ErrConfig = errors.New("invalid agent configuration")

// Config is what Serve runs.
type Config struct {
	Client   *client.Client    // the broker (required)
	Attester evidence.Attester // evidence for /aa/evidence (required)
	// Listen is the REST API's address: host:port or unix:PATH. Default 127.0.0.1:8006.
	Listen string
	// Keyprovider is the gRPC keyprovider's address; "" serves none.
	Keyprovider string
	// AllowedHosts are names besides loopback the REST API accepts in Host/Origin.
	AllowedHosts []string
	// WrapKEK and WrapKID let the keyprovider's WrapKey wrap with one
	// operator-chosen KEK; without them WrapKey is refused (a remote caller
	// never names host files).
	WrapKEK []byte
	WrapKID string
	// CDHSocket and AASocket are the unix sockets of guest-components'
	// ttrpc CDH and AA APIs (package agent/ttrpc; CoCo's paths are
	// agentttrpc.DefaultCDHSocket and DefaultAASocket); "" serves neither.
	CDHSocket, AASocket string
	// TTRPC configures those services (image policy, event log, …).
	TTRPC []agentttrpc.Option
	// InitDataDigest, when set, is bound to the TEE before anything is
	// served (agentttrpc.BindInitDataDigest: PCR 8 on a TPM), as
	// guest-components' AA does with --initdata_digest; a failure stops
	// the agent.
	InitDataDigest []byte
	// ShutdownTimeout bounds the graceful stop. Default 10 s.
	ShutdownTimeout time.Duration
	Logger          *slog.Logger
}

// Serve serves cfg until ctx ends, then stops gracefully. ready, if not
// nil, receives the REST API's address and the keyprovider's (nil when
// not served) once both listen.
func Serve(ctx context.Context, cfg Config, ready func(rest, keyprovider net.Addr)) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.Client == nil || cfg.Attester == nil {
		return fmt.Errorf("agent: a broker client and an attester are required: %w", ErrConfig)
	}
	if cfg.InitDataDigest != nil {
		bound, err := agentttrpc.BindInitDataDigest(ctx, cfg.Attester, cfg.InitDataDigest)
		if err != nil {
			return fmt.Errorf("agent: binding the init-data digest to the %s TEE: %w", cfg.Attester.Tee(), err)
		}
		if bound {
			log.Info("init-data digest bound", "tee", cfg.Attester.Tee(), "pcr", agentttrpc.InitDataPCR)
		} else {
			log.Info("init-data digest not bound at start: this TEE binds init-data in hardware (the broker checks it) or cannot", "tee", cfg.Attester.Tee())
		}
	}
	kh, err := NewKeyHandler(cfg.Client, cfg.WrapKEK, cfg.WrapKID)
	if err != nil {
		return err
	}
	ah, err := api.NewHandler(cfg.Client, cfg.Attester, api.WithAllowedHosts(cfg.AllowedHosts...), api.WithLogger(log))
	if err != nil {
		return fmt.Errorf("%w: %w", err, ErrConfig)
	}
	listen := cfg.Listen
	if listen == "" {
		listen = "127.0.0.1:8006"
	}
	ln, err := api.Listen(listen)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	srv := &http.Server{Handler: ah, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("agent REST API listening", "addr", ln.Addr().String(), "tee", cfg.Attester.Tee())
	WarnIfExposed(log, ln.Addr(), "--listen")
	var gs *grpc.Server
	var gaddr net.Addr
	if cfg.Keyprovider != "" {
		gl, err := api.Listen(cfg.Keyprovider)
		if err != nil {
			srv.Close()
			return fmt.Errorf("agent keyprovider: %w", err)
		}
		gs = grpc.NewServer()
		keyprovider.RegisterGRPC(gs, kh)
		go func() { errc <- gs.Serve(gl) }()
		gaddr = gl.Addr()
		log.Info("agent keyprovider gRPC listening", "addr", gaddr.String())
		WarnIfExposed(log, gaddr, "--keyprovider-grpc")
	}
	var tdone chan error // the ttrpc services' end; nil when not served
	if cfg.CDHSocket != "" || cfg.AASocket != "" {
		ts, err := agentttrpc.New(ctx, cfg.Client, cfg.Attester, append([]agentttrpc.Option{agentttrpc.WithLogger(log), agentttrpc.WithKeyProvider(kh)}, cfg.TTRPC...)...)
		if err != nil {
			srv.Close()
			if gs != nil {
				gs.Stop()
			}
			return err
		}
		defer ts.Close()
		tready := make(chan struct{})
		tdone = make(chan error, 1)
		go func() {
			tdone <- ts.ListenAndServe(ctx, cfg.CDHSocket, cfg.AASocket, func(_, _ net.Addr) { close(tready) })
		}()
		select {
		case <-tready:
		case err := <-tdone:
			srv.Close()
			if gs != nil {
				gs.Stop()
			}
			return err
		}
	}
	if ready != nil {
		ready(ln.Addr(), gaddr)
	}
	select {
	case <-ctx.Done():
	case err := <-tdone: // ttrpc stopped on its own (its ctx is ours: only on failure)
		tdone = nil
		if ctx.Err() == nil {
			srv.Close()
			if gs != nil {
				gs.Stop()
			}
			return err
		}
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			srv.Close()
			if gs != nil {
				gs.Stop()
			}
			return err
		}
	}
	timeout := cfg.ShutdownTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	log.Info("agent shutting down")
	if gs != nil {
		// GracefulStop waits for in-flight calls; bound it like the HTTP side.
		stopped := make(chan struct{})
		go func() { gs.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-sctx.Done():
			gs.Stop()
		}
	}
	err = srv.Shutdown(sctx)
	if tdone != nil {
		// The ttrpc services stop with ctx; wait so that their sockets are
		// gone when Serve returns.
		select {
		case <-tdone:
		case <-sctx.Done():
		}
	}
	return err
}

// KeyHandler is the agent's keyprovider: UnwrapKey through the broker
// (attestation-agent scheme), WrapKey only with the configured KEK.
type KeyHandler struct {
	*aa.Handler
	wrap func(ctx context.Context, opts []byte) ([]byte, error)
}

// NewKeyHandler returns the agent's keyprovider handler; kek and kid go
// together (both empty: WrapKey is refused).
func NewKeyHandler(c *client.Client, kek []byte, kid string) (*KeyHandler, error) {
	h := &KeyHandler{Handler: aa.NewHandler(c)}
	if (len(kek) == 0) != (kid == "") {
		return nil, fmt.Errorf("a wrap KEK and its kid go together: %w", ErrConfig)
	}
	if len(kek) > 0 {
		w, err := aa.NewWrapper(kek, kid)
		if err != nil {
			return nil, err
		}
		h.wrap = w.Wrap
	}
	return h, nil
}

// WrapKey implements keyprovider.Handler.
func (h *KeyHandler) WrapKey(ctx context.Context, _ map[string][][]byte, opts []byte) ([]byte, error) {
	if h.wrap == nil {
		return nil, fmt.Errorf("this agent does not wrap keys (start it with --wrap-kek and --wrap-kid): %w", spec.ErrUnsupported)
	}
	return h.wrap(ctx, opts)
}

// WarnIfExposed warns when a listener is reachable from off the machine:
// whoever reaches the agent's APIs gets the broker's secrets.
func WarnIfExposed(log *slog.Logger, addr net.Addr, flag string) {
	if ta, ok := addr.(*net.TCPAddr); ok && !ta.IP.IsLoopback() {
		log.Warn("agent listening on a non-loopback address: anyone who reaches it receives released secrets", "flag", flag, "addr", addr.String())
	}
}
