package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/coffer-dev/coffer/agent/api"
	"github.com/coffer-dev/coffer/agent/client"
	"github.com/coffer-dev/coffer/keywrap/aa"
	"github.com/coffer-dev/coffer/keywrap/keyprovider"
	"github.com/coffer-dev/coffer/spec"
)

func newAgentCmd() *cobra.Command {
	var (
		kbs              kbsClientFlags
		listen, kpGRPC   string
		wrapKEK, wrapKID string
		allowedHosts     []string
	)
	cmd := &cobra.Command{
		Use:   "agent --kbs URL [--listen 127.0.0.1:8006|unix:PATH] [--keyprovider-grpc 127.0.0.1:50000|unix:PATH] [--allowed-host NAME]…",
		Short: "Guest agent: CDH/AA REST API and the ocicrypt keyprovider gRPC service, backed by the broker",
		Long: `Serve, until interrupted, the Confidential Containers guest APIs backed by coffer's
RCAR client: GET /cdh/resource/<repo>/<type>/<tag>, /aa/token?token_type=kbs and
/aa/evidence?runtime_data=… on --listen, and (with --keyprovider-grpc) the ocicrypt
keyprovider service whose UnWrapKey fetches attestation-agent KEKs from the broker,
so containerd, CRI-O or skopeo decrypt images through it unchanged. WrapKey only
works with a configured --wrap-kek/--wrap-kid: a remote caller never names host files.

The REST API answers only requests whose Host is loopback (localhost, 127.0.0.0/8,
[::1]) or named by --allowed-host, and refuses cross-origin browser requests, so a
web page cannot reach it through DNS rebinding. Either listener may be a unix socket,
unix:/run/coffer/agent.sock (created 0600, removed on exit), as CoCo's CDH uses.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := kbs.client()
			if err != nil {
				return err
			}
			if c == nil {
				return fmt.Errorf("--kbs (or COFFER_KBS_URL) is required: %w", ErrUsage)
			}
			h, err := newAgentKeyHandler(c, wrapKEK, wrapKID)
			if err != nil {
				return err
			}
			return serveAgent(cmd.Context(), c, kbs.attester, listen, kpGRPC, h, slog.Default(), api.WithAllowedHosts(allowedHosts...))
		},
	}
	kbs.AddFlags(cmd.Flags())
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8006", "address of the CDH/AA REST API: host:port or unix:PATH")
	cmd.Flags().StringVar(&kpGRPC, "keyprovider-grpc", "", "address of the ocicrypt keyprovider gRPC service (e.g. 127.0.0.1:50000 or unix:PATH)")
	cmd.Flags().StringArrayVar(&allowedHosts, "allowed-host", nil, "host name or address (no port) the REST API accepts in Host/Origin besides loopback; repeatable")
	cmd.Flags().StringVar(&wrapKEK, "wrap-kek", "", "32-byte KEK file WrapKey uses (with --wrap-kid)")
	cmd.Flags().StringVar(&wrapKID, "wrap-kid", "", "kbs:///repo/type/tag naming --wrap-kek in the broker")
	return cmd
}

// agentKeyHandler unwraps through the broker and wraps only with the KEK
// the operator configured.
type agentKeyHandler struct {
	keyprovider.Handler // unwrap: aa with the broker resolver
	wrap                func(ctx context.Context, opts []byte) ([]byte, error)
}

func newAgentKeyHandler(c *client.Client, kekFile, kid string) (*agentKeyHandler, error) {
	h := &agentKeyHandler{Handler: aa.NewHandler(c.KeyResolver())}
	if (kekFile == "") != (kid == "") {
		return nil, fmt.Errorf("--wrap-kek and --wrap-kid go together: %w", ErrUsage)
	}
	if kekFile != "" {
		kek, err := aa.ReadKEK(kekFile)
		if err != nil {
			return nil, err
		}
		w, err := aa.NewWrapper(kek, kid)
		if err != nil {
			return nil, err
		}
		h.wrap = w.Wrap
	}
	return h, nil
}

func (h *agentKeyHandler) WrapKey(ctx context.Context, _ map[string][][]byte, opts []byte) ([]byte, error) {
	if h.wrap == nil {
		return nil, fmt.Errorf("this agent does not wrap keys (start it with --wrap-kek and --wrap-kid): %w", spec.ErrUnsupported)
	}
	return h.wrap(ctx, opts)
}

func serveAgent(ctx context.Context, c *client.Client, att attesterFunc, listen, kpAddr string, h keyprovider.Handler, log *slog.Logger, opts ...api.Option) error {
	a, err := att()
	if err != nil {
		return err
	}
	ah, err := api.NewHandler(c, a, append(opts, api.WithLogger(log))...)
	if err != nil {
		return fmt.Errorf("%w: %w", err, ErrUsage)
	}
	ln, err := api.Listen(listen)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	srv := &http.Server{Handler: ah, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("agent REST API listening", "addr", ln.Addr().String(), "tee", a.Tee())
	warnIfExposed(log, ln.Addr(), "--listen")
	var gs *grpc.Server
	if kpAddr != "" {
		gl, err := api.Listen(kpAddr)
		if err != nil {
			srv.Close()
			return fmt.Errorf("agent keyprovider: %w", err)
		}
		gs = grpc.NewServer()
		keyprovider.RegisterGRPC(gs, h)
		go func() { errc <- gs.Serve(gl) }()
		log.Info("agent keyprovider gRPC listening", "addr", gl.Addr().String())
		warnIfExposed(log, gl.Addr(), "--keyprovider-grpc")
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			srv.Close()
			if gs != nil {
				gs.Stop()
			}
			return err
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
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
	return srv.Shutdown(sctx)
}

// warnIfExposed warns when a listener is reachable from off the machine:
// whoever reaches the agent's APIs gets the broker's secrets.
func warnIfExposed(log *slog.Logger, addr net.Addr, flag string) {
	if ta, ok := addr.(*net.TCPAddr); ok && !ta.IP.IsLoopback() {
		log.Warn("agent listening on a non-loopback address: anyone who reaches it receives released secrets", "flag", flag, "addr", addr.String())
	}
}
