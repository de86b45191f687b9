package keyprovider

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/coffer-dev/coffer/spec"
)

// The gRPC service, as declared by ocicrypt's utils/keyprovider/keyprovider.proto:
//
//	package keyprovider;
//	message keyProviderKeyWrapProtocolInput  { bytes KeyProviderKeyWrapProtocolInput = 1; }
//	message keyProviderKeyWrapProtocolOutput { bytes KeyProviderKeyWrapProtocolOutput = 1; }
//	service KeyProviderService {
//	  rpc WrapKey(keyProviderKeyWrapProtocolInput) returns (keyProviderKeyWrapProtocolOutput);
//	  rpc UnWrapKey(keyProviderKeyWrapProtocolInput) returns (keyProviderKeyWrapProtocolOutput);
//	}
//
// Only the service and method names travel on the wire (the HTTP/2 path
// "/keyprovider.KeyProviderService/WrapKey"); a message is the protobuf
// encoding of field 1 (bytes), which is byte for byte the encoding of
// google.protobuf.BytesValue. The service is therefore declared by hand over
// wrapperspb.BytesValue instead of generated code: generated code would
// register the names keyprovider.keyProviderKeyWrapProtocolInput etc. in the
// global protobuf registry, where ocicrypt's and CoCo's generated Go code
// register the very same names, and protobuf-go panics at start-up on such a
// conflict — any program linking coffer and ocicrypt (its interop tests
// included) would crash.
const (
	ServiceName     = "keyprovider.KeyProviderService"
	methodWrapKey   = "WrapKey"
	methodUnWrapKey = "UnWrapKey"
)

// RegisterGRPC registers h as keyprovider.KeyProviderService on s.
func RegisterGRPC(s *grpc.Server, h Handler) {
	s.RegisterService(&serviceDesc, h)
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: ServiceName,
	HandlerType: (*Handler)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: methodWrapKey, Handler: grpcMethod(opKeyWrap)},
		{MethodName: methodUnWrapKey, Handler: grpcMethod(opKeyUnwrap)},
	},
	Streams:  []grpc.StreamDesc{},
	Metadata: "keyprovider.proto",
}

func grpcMethod(op string) grpc.MethodHandler {
	full := "/" + ServiceName + "/" + methodWrapKey
	if op == opKeyUnwrap {
		full = "/" + ServiceName + "/" + methodUnWrapKey
	}
	return func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
		in := new(wrapperspb.BytesValue)
		if err := dec(in); err != nil {
			return nil, err
		}
		h := srv.(Handler)
		call := func(ctx context.Context, req any) (any, error) {
			out, err := handle(ctx, h, op, req.(*wrapperspb.BytesValue).GetValue())
			if err != nil {
				return nil, toStatus(err)
			}
			return wrapperspb.Bytes(out), nil
		}
		if interceptor == nil {
			return call(ctx, in)
		}
		return interceptor(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: full}, call)
	}
}

// Sentinel ↔ gRPC code mapping, so coffer clients of a coffer server keep
// the error class across the wire.
var statusCodes = []struct {
	err  error
	code codes.Code
}{
	{errBadRequest, codes.InvalidArgument},
	{spec.ErrPolicyDenied, codes.PermissionDenied},
	{spec.ErrNotFound, codes.NotFound},
	{spec.ErrIntegrity, codes.DataLoss},
	{spec.ErrNoKey, codes.FailedPrecondition},
	{spec.ErrUnsupported, codes.Unimplemented},
}

func toStatus(err error) error {
	for _, m := range statusCodes {
		if errors.Is(err, m.err) {
			return status.Error(m.code, err.Error())
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	if errors.Is(err, context.Canceled) {
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// fromStatus turns a gRPC error into an error wrapping the matching sentinel.
func fromStatus(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	for _, m := range statusCodes {
		if st.Code() == m.code && m.err != errBadRequest {
			return &remoteError{msg: st.Message(), sentinel: m.err}
		}
	}
	return fmt.Errorf("grpc %s: %s", st.Code(), st.Message())
}

// remoteError is a server's error message carrying the sentinel its status
// code maps to (the message already names it).
type remoteError struct {
	msg      string
	sentinel error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

// callGRPC performs one WrapKey or UnWrapKey call.
func callGRPC(ctx context.Context, addr string, tlsConf *GRPCTLS, op string, in []byte) ([]byte, error) {
	creds := insecure.NewCredentials()
	if tlsConf != nil {
		tc, err := tlsConfig(tlsConf)
		if err != nil {
			return nil, err
		}
		creds = credentials.NewTLS(tc)
	}
	cc, err := grpc.NewClient(grpcTarget(addr), grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", addr, err)
	}
	defer cc.Close()
	method := "/" + ServiceName + "/" + methodWrapKey
	if op == opKeyUnwrap {
		method = "/" + ServiceName + "/" + methodUnWrapKey
	}
	out := new(wrapperspb.BytesValue)
	if err := cc.Invoke(ctx, method, wrapperspb.Bytes(in), out, grpc.MaxCallRecvMsgSize(maxMessage)); err != nil {
		return nil, fmt.Errorf("%s on %s: %w", method, addr, fromStatus(err))
	}
	return out.GetValue(), nil
}

// grpcTarget turns an ocicrypt "host:port" into a gRPC target. ocicrypt
// dials it as is (passthrough); ocicrypt-rs also accepts http:// and tcp://.
func grpcTarget(addr string) string {
	for _, p := range []string{"http://", "tcp://"} {
		if strings.HasPrefix(addr, p) {
			addr = strings.TrimPrefix(addr, p)
		}
	}
	if strings.Contains(addr, "://") || strings.HasPrefix(addr, "unix:") {
		return addr
	}
	return "passthrough:///" + addr
}

func tlsConfig(c *GRPCTLS) (*tls.Config, error) {
	tc := &tls.Config{
		ServerName:         c.ServerName,
		InsecureSkipVerify: c.InsecureSkipVerify, //nolint:gosec // an explicit, documented ocicrypt option
		MinVersion:         tls.VersionTLS12,
	}
	if c.RootCAFile != "" {
		pem, err := os.ReadFile(c.RootCAFile)
		if err != nil {
			return nil, fmt.Errorf("reading grpc-tls root-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("grpc-tls root-ca-file %s holds no PEM certificate", c.RootCAFile)
		}
		tc.RootCAs = pool
	}
	if c.CertFile != "" || c.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("loading grpc-tls client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
