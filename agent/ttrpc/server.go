// Package ttrpc serves guest-components' Confidential Data Hub (CDH) and
// Attestation Agent (AA) APIs over containerd's ttrpc, the way kata-agent
// calls them inside a Confidential Containers guest: the services of
// guest-components' protos (generated into gen/cdh and gen/aa), on unix
// sockets (DefaultCDHSocket, DefaultAASocket), backed by coffer's broker
// client, attesters, pull and image policy.
//
// What each RPC does follows guest-components (commit 8246e5e0):
//   - api.GetResourceService.GetResource: kbs:///repo/type/tag from the broker;
//     kbs+<plugin>:// URIs are refused (InvalidArgument) — coffer's broker has no plugins.
//   - api.ImagePullService.PullImage: pull, decrypt, verify (image security
//     policy and broker pins), unpack into bundle_path/rootfs; the reply is the
//     manifest digest, and the pull is recorded as a runtime measurement
//     (domain github.com/confidential-containers, operation PullImage).
//   - api.SealedSecretService.UnsealSecret: "sealed." ES256 JWS envelopes of
//     type vault (provider kbs); signatures are always checked.
//   - api.SecureMountService.SecureMount: refused (Unimplemented) for every
//     driver: coffer does not mount volumes yet.
//   - attestation_agent.AttestationAgentService: GetEvidence,
//     GetAdditionalEvidence, GetToken (kbs, coco_as), ExtendRuntimeMeasurement
//     (AAEL event log + TPM PCR, default 17), BindInitData (TPM PCR 8),
//     GetTeeType, GetAdditionalTees.
//
// Errors are ttrpc status errors whose message starts "[CDH] [ERROR]: " or
// "[AA] [ERROR]: " as guest-components' do; unlike guest-components, which
// answers INTERNAL for everything, the code says what went wrong:
// InvalidArgument (bad input), PermissionDenied (the broker's policy
// refused), NotFound, Unimplemented, Unavailable (broker unreachable),
// Internal.
package ttrpc

import (
	"context"
	"errors"
	"fmt"
	"github.com/coffer-dev/coffer/agent/sealed"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	cttrpc "github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coffer-dev/coffer/agent/api"
	"github.com/coffer-dev/coffer/agent/client"
	"github.com/coffer-dev/coffer/agent/evidence"
	"github.com/coffer-dev/coffer/agent/ttrpc/gen/aa"
	"github.com/coffer-dev/coffer/agent/ttrpc/gen/cdh"
	kwaa "github.com/coffer-dev/coffer/keywrap/aa"
	"github.com/coffer-dev/coffer/keywrap/keyprovider"
	"github.com/coffer-dev/coffer/pull"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/transport"
)

// The sockets guest-components listens on (api-server-rest's constants).
const (
	DefaultCDHSocket = "/run/confidential-containers/cdh.sock"
	DefaultAASocket  = "/run/confidential-containers/attestation-agent/attestation-agent.sock"
	// DefaultEventLog is where guest-components' AA keeps its AAEL.
	DefaultEventLog = "/run/attestation-agent/eventlog"
	// DefaultPCR is the register runtime measurements extend when the
	// caller names none (guest-components' DEFAULT_PCR_INDEX).
	DefaultPCR = 17
)

// Server holds the CDH and AA services. Make one with New; serve it with
// Serve or ListenAndServe.
type Server struct {
	c   *client.Client
	att evidence.Attester
	o   options

	pullMu  sync.Mutex // one pull at a time, as image-rs's client lock
	evlogMu sync.Mutex // one extension at a time
	evlog   *eventLog  // nil: runtime measurement not enabled
}

type options struct {
	log          *slog.Logger
	policySrc    string
	policyDoc    []byte
	requireSig   bool
	transport    []transport.Option
	pull         []pull.Option
	evlogPath    string
	pcr          uint64
	regs         Registers
	credsURI     string
	regConfigURI string
	regConfig    *RegistryConfig
	secretKeys   string
	tokenCfg     TokenConfig
	aaSocket     string
	additional   []evidence.Attester
	keyprovider  keyprovider.Handler
}

// Option configures New.
type Option func(*options) error

// WithLogger logs one line per RPC failure and per released resource (its
// name and size, never its bytes). Default: discard.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l != nil {
			o.log = l
		}
		return nil
	}
}

// WithImagePolicy enforces the containers-policy.json at src on every
// PullImage: a file path, file:///path, or kbs:///repo/type/tag fetched
// from the broker for each pull, so a changed policy applies to the next
// one (CDH's image_security_policy_uri).
// Default: no policy (the broker's digest pins still apply).
func WithImagePolicy(src string) Option {
	return func(o *options) error { o.policySrc = src; return nil }
}

// WithImagePolicyDocument enforces an inline containers-policy.json (CDH's
// image_security_policy, as init-data carries it). WithImagePolicy wins
// when both are set, as in CDH.
func WithImagePolicyDocument(doc []byte) Option {
	return func(o *options) error {
		if len(doc) > maxPolicy {
			return badInput("image security policy of %d bytes (at most %d)", len(doc), maxPolicy)
		}
		o.policyDoc = append([]byte(nil), doc...)
		return nil
	}
}

// WithRequireSignature refuses images nothing vouches for (no pin, no
// signature, no digest). Default false: such pulls are logged as a warning.
func WithRequireSignature(b bool) Option {
	return func(o *options) error { o.requireSig = b; return nil }
}

// WithTransport passes registry options to PullImage (for example
// transport.WithInsecure for a plain-HTTP registry).
func WithTransport(t ...transport.Option) Option {
	return func(o *options) error { o.transport = append(o.transport, t...); return nil }
}

// WithPullOptions passes options to pull.Pull (unpack limits, jobs).
func WithPullOptions(p ...pull.Option) Option {
	return func(o *options) error { o.pull = append(o.pull, p...); return nil }
}

// WithEventLog enables runtime measurement: ExtendRuntimeMeasurement (and
// each PullImage) appends a CoCo AAEL event to the TCG2-format log at path
// and extends the register it names (default pcr) through regs. With regs
// nil the attester's registers are used (RegistersFor); an attester with
// none answers NOT_SUPPORTED, as guest-components does. Default: not
// enabled (NOT_ENABLED).
func WithEventLog(path string, pcr uint64, regs Registers) Option {
	return func(o *options) error {
		if path == "" {
			return errors.New("event log path is empty")
		}
		o.evlogPath, o.pcr, o.regs = path, pcr, regs
		return nil
	}
}

// WithRegistryCredentials makes PullImage authenticate to registries with
// the docker config.json at uri: kbs:///repo/type/tag (fetched from the
// broker for each pull and held in memory only) or a file path (CDH's
// authenticated_registry_credentials_uri). Default: anonymous.
func WithRegistryCredentials(uri string) Option {
	return func(o *options) error { o.credsURI = uri; return nil }
}

// WithRegistryConfig applies the registry configuration at uri (kbs:///…
// or a file; CDH's registry_configuration_uri): blocked prefixes are
// refused and "location" remaps are followed. Default: none.
func WithRegistryConfig(uri string) Option {
	return func(o *options) error { o.regConfigURI = uri; return nil }
}

// WithRegistryConfigDocument applies an inline registry configuration
// (cdh.toml's [image.registry_config]); WithRegistryConfig wins when both
// are set.
func WithRegistryConfigDocument(rc *RegistryConfig) Option {
	return func(o *options) error { o.regConfig = rc; return nil }
}

// WithSealedSecretKeys names the directory holding local verification keys
// (JWK files) for sealed secrets whose kid is not a kbs:/// URI (CDH's
// /run/confidential-containers/cdh/sealed-secret). Default: none, so only
// broker-held keys verify.
func WithSealedSecretKeys(dir string) Option {
	return func(o *options) error { o.secretKeys = dir; return nil }
}

// WithTokenConfig sets where GetToken gets tokens (aa.toml's
// [token_configs]). Default: kbs tokens from the broker client, coco_as
// refused.
func WithTokenConfig(tc TokenConfig) Option {
	return func(o *options) error { o.tokenCfg = tc; return nil }
}

// WithAASocket makes PullImage record its event through the attestation
// agent at path (cdh.toml's [aa] aa_socket) when this server keeps no
// event log itself, as guest-components' CDH does. Default: none.
func WithAASocket(path string) Option {
	return func(o *options) error { o.aaSocket = strings.TrimPrefix(path, "unix://"); return nil }
}

// WithAdditionalAttesters adds attesters besides the primary one (for
// example a vTPM beside SNP or TDX): GetAdditionalTees names them and
// GetAdditionalEvidence returns {"<tee>": evidence, …} from each, as
// guest-components' additional attesters do. Default: none.
func WithAdditionalAttesters(atts ...evidence.Attester) Option {
	return func(o *options) error {
		seen := map[string]bool{}
		for _, a := range o.additional {
			seen[a.Tee()] = true
		}
		for _, a := range atts {
			if a == nil || seen[a.Tee()] {
				return fmt.Errorf("additional attester %v: nil or given twice", a)
			}
			seen[a.Tee()] = true
			o.additional = append(o.additional, a)
		}
		return nil
	}
}

// WithKeyProvider sets the handler of the keyprovider.KeyProviderService
// served on the CDH socket (ocicrypt's keyprovider protocol over ttrpc, as
// CDH serves it). Default: UnWrapKey through the broker
// (attestation-agent scheme), WrapKey refused.
func WithKeyProvider(h keyprovider.Handler) Option {
	return func(o *options) error { o.keyprovider = h; return nil }
}

// New returns the services backed by broker client c and attester att.
func New(ctx context.Context, c *client.Client, att evidence.Attester, opts ...Option) (*Server, error) {
	if c == nil || att == nil {
		return nil, fmt.Errorf("agent ttrpc: a broker client and an attester are required: %w", spec.ErrUnsupported)
	}
	o := options{log: slog.New(slog.DiscardHandler), pcr: DefaultPCR}
	for _, f := range opts {
		if err := f(&o); err != nil {
			return nil, fmt.Errorf("agent ttrpc: %w", err)
		}
	}
	if o.keyprovider == nil {
		o.keyprovider = kwaa.NewHandler(c.KeyResolver())
	}
	s := &Server{c: c, att: att, o: o}
	if o.evlogPath != "" {
		regs := o.regs
		if regs == nil {
			regs = RegistersFor(att)
		}
		if regs != nil {
			ev, err := openEventLog(ctx, o.evlogPath, regs)
			if err != nil {
				return nil, fmt.Errorf("agent ttrpc: %w", err)
			}
			s.evlog = ev
		} else {
			s.evlog = &eventLog{} // enabled, but the TEE has no registers
		}
	}
	return s, nil
}

// Close releases the event log.
func (s *Server) Close() error {
	if s.evlog != nil {
		return s.evlog.close()
	}
	return nil
}

// Register adds the four CDH services (and CDH's keyprovider service) to cdhSrv and the AA service to
// aaSrv (either may be nil; they may be the same server).
func (s *Server) Register(cdhSrv, aaSrv *cttrpc.Server) {
	if cdhSrv != nil {
		c := &cdhService{s}
		cdh.RegisterGetResourceServiceService(cdhSrv, c)
		cdh.RegisterImagePullServiceService(cdhSrv, c)
		cdh.RegisterSealedSecretServiceService(cdhSrv, c)
		cdh.RegisterSecureMountServiceService(cdhSrv, c)
		keyprovider.RegisterTTRPC(cdhSrv, s.o.keyprovider)
	}
	if aaSrv != nil {
		aa.RegisterAttestationAgentServiceService(aaSrv, &aaService{s})
	}
}

// ListenAndServe listens on the unix sockets cdhPath and aaPath (paths,
// or unix:///paths as guest-components' configs write them; created
// 0600 in directories created if missing, removed on exit; "" serves
// neither service there) and serves until ctx ends. ready, if not nil,
// gets both addresses (nil for one not served) once they accept.
func (s *Server) ListenAndServe(ctx context.Context, cdhPath, aaPath string, ready func(cdhAddr, aaAddr net.Addr)) error {
	var lns []net.Listener
	closeAll := func() {
		for _, l := range lns {
			l.Close()
		}
	}
	var addrs [2]net.Addr
	cdhPath, aaPath = strings.TrimPrefix(cdhPath, "unix://"), strings.TrimPrefix(aaPath, "unix://")
	for i, p := range []string{cdhPath, aaPath} {
		if p == "" {
			continue
		}
		ln, err := api.Listen("unix:" + p)
		if err != nil {
			closeAll()
			return fmt.Errorf("agent ttrpc: %w", err)
		}
		lns = append(lns, ln)
		addrs[i] = ln.Addr()
	}
	defer closeAll()
	var cdhLn, aaLn net.Listener
	if cdhPath != "" {
		cdhLn = lns[0]
	}
	if aaPath != "" {
		aaLn = lns[len(lns)-1]
	}
	if ready != nil {
		ready(addrs[0], addrs[1])
	}
	return s.Serve(ctx, cdhLn, aaLn)
}

// Serve serves the CDH services on cdhLn and the AA service on aaLn
// (either may be nil) until ctx ends, then shuts down, waiting for calls in
// flight as long as ctx's cause allows (at most 10 s). Only clients of this
// process's user are accepted (SO_PEERCRED), besides the socket's mode.
func (s *Server) Serve(ctx context.Context, cdhLn, aaLn net.Listener) error {
	errc := make(chan error, 2)
	var srvs []*cttrpc.Server
	for _, p := range []struct {
		ln   net.Listener
		isAA bool
	}{{cdhLn, false}, {aaLn, true}} {
		if p.ln == nil {
			continue
		}
		srv, err := cttrpc.NewServer(cttrpc.WithServerHandshaker(cttrpc.UnixSocketRequireSameUser()))
		if err != nil {
			return err
		}
		if p.isAA {
			s.Register(nil, srv)
		} else {
			s.Register(srv, nil)
		}
		srvs = append(srvs, srv)
		ln := p.ln
		go func() { errc <- srv.Serve(ctx, ln) }()
		s.o.log.Info("agent ttrpc listening", "service", map[bool]string{false: "cdh", true: "aa"}[p.isAA], "addr", ln.Addr().String())
	}
	if len(srvs) == 0 {
		return fmt.Errorf("agent ttrpc: no socket to serve: %w", spec.ErrUnsupported)
	}
	var serveErr error
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, cttrpc.ErrServerClosed) {
			serveErr = err
		}
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	for _, srv := range srvs {
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
	}
	return serveErr
}

// rpcError maps err to a ttrpc status with guest-components' message
// prefix and a code from coffer's sentinels.
func rpcError(log *slog.Logger, svc, what string, err error) error {
	if err == nil {
		return nil
	}
	code := codes.Internal
	switch {
	case errors.Is(err, errBadInput):
		code = codes.InvalidArgument
	case errors.Is(err, spec.ErrPolicyDenied):
		code = codes.PermissionDenied
	case errors.Is(err, spec.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, errUnimplemented), errors.Is(err, sealed.ErrNoProvider):
		code = codes.Unimplemented
	case errors.Is(err, spec.ErrUnsupported):
		code = codes.InvalidArgument
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	log.Warn("agent ttrpc: request failed", "service", svc, "rpc", what, "code", code.String(), "error", err)
	return status.Errorf(code, "[%s] [ERROR]: %s: %v", svc, what, err)
}

// shutdownTimeout bounds the graceful stop.
const shutdownTimeout = 10 * time.Second

var (
	errBadInput      = errors.New("bad request")
	errUnimplemented = errors.New("not implemented by coffer")
)

func badInput(format string, a ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), errBadInput)
}

// UnsealSecret verifies a sealed secret and returns its plaintext
// (package sealed; the broker through the agent's attested getter).
func (s *Server) UnsealSecret(ctx context.Context, secret []byte) ([]byte, error) {
	return sealed.Unsealer{Resource: s.GetResource, KeysDir: s.o.secretKeys}.Unseal(ctx, secret)
}
