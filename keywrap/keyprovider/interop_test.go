package keyprovider

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"testing"

	occonfig "github.com/containers/ocicrypt/config"
	kpconfig "github.com/containers/ocicrypt/config/keyprovider-config"
	ockp "github.com/containers/ocicrypt/keywrap/keyprovider"
	ocpb "github.com/containers/ocicrypt/utils/keyprovider"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Interop with the reference implementation, github.com/containers/ocicrypt
// (test-only dependency).

// ocicryptRoundTrip drives ocicrypt's keyprovider key wrapper (the code
// skopeo, containerd and CRI-O run) against a provider.
func ocicryptRoundTrip(t *testing.T, attrs kpconfig.KeyProviderAttrs) {
	t.Helper()
	kw := ockp.NewKeyWrapper("toy", attrs)
	if got, want := kw.GetAnnotationID(), "org.opencontainers.image.enc.keys.provider.toy"; got != want {
		t.Fatalf("annotation id %q, want %q", got, want)
	}
	ec := &occonfig.EncryptConfig{
		Parameters:    map[string][][]byte{"toy": {[]byte("keyid=kbs:///a/b/c")}},
		DecryptConfig: occonfig.DecryptConfig{Parameters: map[string][][]byte{}},
	}
	ann, err := kw.WrapKeys(ec, testPrivopts)
	if err != nil {
		t.Fatalf("ocicrypt WrapKeys through coffer's server: %v", err)
	}
	var a toyAnnotation
	if err := json.Unmarshal(ann, &a); err != nil {
		t.Fatalf("annotation %q: %v", ann, err)
	}
	if !reflect.DeepEqual(a.Params, ec.Parameters) {
		t.Errorf("coffer's server decoded ec.Parameters %q, want %q", a.Params, ec.Parameters)
	}
	dc := &occonfig.DecryptConfig{Parameters: map[string][][]byte{"toy": {[]byte("Enabled")}}}
	got, err := kw.UnwrapKey(dc, ann)
	if err != nil {
		t.Fatalf("ocicrypt UnwrapKey through coffer's server: %v", err)
	}
	if !bytes.Equal(got, testPrivopts) {
		t.Errorf("ocicrypt unwrapped %q, want %q", got, testPrivopts)
	}
}

func TestOcicryptClientCofferCmdServer(t *testing.T) {
	t.Setenv(helperEnv, "serve")
	ocicryptRoundTrip(t, kpconfig.KeyProviderAttrs{Command: &kpconfig.Command{Path: testExe(t), Args: []string{"-test.run=^$"}}})
}

func TestOcicryptClientCofferGRPCServer(t *testing.T) {
	h := &toyHandler{}
	addr := startServer(t, func(s *grpc.Server) { RegisterGRPC(s, h) })
	ocicryptRoundTrip(t, kpconfig.KeyProviderAttrs{Grpc: addr})
	if want := map[string][][]byte{"toy": {[]byte("Enabled")}}; !reflect.DeepEqual(h.lastDC, want) {
		t.Errorf("server received dc.Parameters %q, want %q", h.lastDC, want)
	}
}

// ocicryptServer is a provider built on ocicrypt's generated gRPC stubs and
// protocol structs, recording what coffer's client sent.
type ocicryptServer struct {
	ocpb.UnimplementedKeyProviderServiceServer
	lastWrap, lastUnwrap ockp.KeyProviderKeyWrapProtocolInput
}

func (s *ocicryptServer) WrapKey(_ context.Context, req *ocpb.KeyProviderKeyWrapProtocolInput) (*ocpb.KeyProviderKeyWrapProtocolOutput, error) {
	var in ockp.KeyProviderKeyWrapProtocolInput
	if err := json.Unmarshal(req.GetKeyProviderKeyWrapProtocolInput(), &in); err != nil {
		return nil, err
	}
	s.lastWrap = in
	out, err := json.Marshal(ockp.KeyProviderKeyWrapProtocolOutput{
		KeyWrapResults: ockp.KeyWrapResults{Annotation: xor(in.KeyWrapParams.OptsData)},
	})
	return &ocpb.KeyProviderKeyWrapProtocolOutput{KeyProviderKeyWrapProtocolOutput: out}, err
}

func (s *ocicryptServer) UnWrapKey(_ context.Context, req *ocpb.KeyProviderKeyWrapProtocolInput) (*ocpb.KeyProviderKeyWrapProtocolOutput, error) {
	var in ockp.KeyProviderKeyWrapProtocolInput
	if err := json.Unmarshal(req.GetKeyProviderKeyWrapProtocolInput(), &in); err != nil {
		return nil, err
	}
	s.lastUnwrap = in
	out, err := json.Marshal(ockp.KeyProviderKeyWrapProtocolOutput{
		KeyUnwrapResults: ockp.KeyUnwrapResults{OptsData: xor(in.KeyUnwrapParams.Annotation)},
	})
	return &ocpb.KeyProviderKeyWrapProtocolOutput{KeyProviderKeyWrapProtocolOutput: out}, err
}

func TestCofferClientOcicryptGRPCServer(t *testing.T) {
	srv := &ocicryptServer{}
	addr := startServer(t, func(s *grpc.Server) { ocpb.RegisterKeyProviderServiceServer(s, srv) })
	c := grpcConfig(t, addr, "toy")
	ctx := context.Background()

	w, _ := c.Wrapper("toy", "p=1")
	ann, err := w.Wrap(ctx, testPrivopts)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ann, xor(testPrivopts)) {
		t.Errorf("annotation %q, want %q", ann, xor(testPrivopts))
	}
	in := srv.lastWrap
	if in.Operation != ockp.OpKeyWrap || in.KeyWrapParams.Ec == nil {
		t.Fatalf("server decoded %+v", in)
	}
	if want := map[string][][]byte{"toy": {[]byte("p=1")}}; !reflect.DeepEqual(in.KeyWrapParams.Ec.Parameters, want) {
		t.Errorf("server decoded ec.Parameters %q, want %q", in.KeyWrapParams.Ec.Parameters, want)
	}
	if n := len(in.KeyWrapParams.Ec.DecryptConfig.Parameters); n != 0 {
		t.Errorf("coffer forwarded %d decrypt parameters while wrapping, want 0", n)
	}

	u, _ := c.Unwrapper("toy")
	got, err := u.Unwrap(ctx, ann)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, testPrivopts) {
		t.Errorf("unwrapped %q, want %q", got, testPrivopts)
	}
	in = srv.lastUnwrap
	if in.Operation != ockp.OpKeyUnwrap || in.KeyUnwrapParams.Dc == nil {
		t.Fatalf("server decoded %+v", in)
	}
	if want := map[string][][]byte{"toy": {[]byte("Enabled")}}; !reflect.DeepEqual(in.KeyUnwrapParams.Dc.Parameters, want) {
		t.Errorf("server decoded dc.Parameters %q, want %q", in.KeyUnwrapParams.Dc.Parameters, want)
	}
}

// TestMessageEncodingMatchesOcicrypt: the hand-declared service sends
// google.protobuf.BytesValue; its encoding must equal that of ocicrypt's
// generated messages, field for field.
func TestMessageEncodingMatchesOcicrypt(t *testing.T) {
	for _, payload := range [][]byte{testPrivopts, {0}, nil} {
		ours, err := proto.Marshal(wrapperspb.Bytes(payload))
		if err != nil {
			t.Fatal(err)
		}
		in, err := proto.Marshal(&ocpb.KeyProviderKeyWrapProtocolInput{KeyProviderKeyWrapProtocolInput: payload})
		if err != nil {
			t.Fatal(err)
		}
		out, err := proto.Marshal(&ocpb.KeyProviderKeyWrapProtocolOutput{KeyProviderKeyWrapProtocolOutput: payload})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ours, in) || !bytes.Equal(ours, out) {
			t.Errorf("payload %q: BytesValue %x, ocicrypt input %x, output %x", payload, ours, in, out)
		}
	}
}
