package ttrpc_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/coffer-dev/coffer/internal/demo"
)

// A client that shares no code with the server: the service and method
// names are spelled as guest-components' protos declare them, and each
// message is a well-known protobuf type whose encoding is byte for byte the
// proto's (field numbers and wire types as in api.proto and
// attestation-agent.proto):
//
//	GetResourceRequest{1: string}                  = StringValue
//	ImagePullRequest{1: string, 2: string}         = Any{type_url, value}
//	ExtendRuntimeMeasurementRequest{1,2,3: string} = FileDescriptorProto{name, package, dependency[0]}
//	GetAdditionalTeesResponse{1: repeated string}  = FieldMask{paths}
//	{1: bytes} messages                            = BytesValue; {1: enum} = Int32Value; {} = Empty
func TestIndependentWireClient(t *testing.T) {
	u := start(t, nil, nil)
	ctx := context.Background()
	u.b.SetResource(t, "default/wire/one", []byte("wire bytes"))
	cc, ac := dial(t, u.cdhSock), dial(t, u.aaSock)
	call := func(svc, method string, req, resp proto.Message) error {
		c := cc
		if strings.HasPrefix(svc, "attestation_agent.") {
			c = ac
		}
		return c.Call(ctx, svc, method, req, resp)
	}

	res := new(wrapperspb.BytesValue)
	if err := call("api.GetResourceService", "GetResource", wrapperspb.String("kbs:///default/wire/one"), res); err != nil || string(res.GetValue()) != "wire bytes" {
		t.Errorf("GetResource = %q, %v", res.GetValue(), err)
	}

	img := encryptedRegistryImage(t, u.b, "", "")
	bundle := t.TempDir()
	digest := new(wrapperspb.StringValue)
	if err := call("api.ImagePullService", "PullImage", &anypb.Any{TypeUrl: img, Value: []byte(bundle)}, digest); err != nil || !strings.HasPrefix(digest.GetValue(), "sha256:") {
		t.Errorf("PullImage = %q, %v", digest.GetValue(), err)
	}
	if got, err := os.ReadFile(filepath.Join(bundle, "rootfs", "secret")); err != nil || string(got) != demo.Secret+"\n" {
		t.Errorf("rootfs/secret = %q, %v", got, err)
	}

	err := call("api.SecureMountService", "SecureMount", wrapperspb.String("block-device"), new(emptypb.Empty))
	if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument {
		t.Errorf("SecureMount without options: %v", err)
	}
	err = call("api.SealedSecretService", "UnsealSecret", wrapperspb.Bytes([]byte("sealed.a.b.c")), new(wrapperspb.BytesValue))
	if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument {
		t.Errorf("UnsealSecret of garbage: %v", err)
	}

	ev := new(wrapperspb.BytesValue)
	if err := call("attestation_agent.AttestationAgentService", "GetEvidence", wrapperspb.Bytes([]byte("n")), ev); err != nil || !strings.Contains(string(ev.GetValue()), base64.StdEncoding.EncodeToString([]byte("n"))) {
		t.Errorf("GetEvidence = %s, %v", ev.GetValue(), err)
	}
	add := new(wrapperspb.BytesValue)
	if err := call("attestation_agent.AttestationAgentService", "GetAdditionalEvidence", wrapperspb.Bytes([]byte("n")), add); err != nil || len(add.GetValue()) != 0 {
		t.Errorf("GetAdditionalEvidence = %s, %v", add.GetValue(), err)
	}
	tok := new(wrapperspb.BytesValue)
	var tm map[string]string
	if err := call("attestation_agent.AttestationAgentService", "GetToken", wrapperspb.String("kbs"), tok); err != nil || json.Unmarshal(tok.GetValue(), &tm) != nil || tm["token"] == "" {
		t.Errorf("GetToken = %s, %v", tok.GetValue(), err)
	}
	result := new(wrapperspb.Int32Value)
	if err := call("attestation_agent.AttestationAgentService", "ExtendRuntimeMeasurement",
		&descriptorpb.FileDescriptorProto{Name: proto.String("d"), Package: proto.String("o"), Dependency: []string{"c"}}, result); err != nil || result.GetValue() != 2 { // NOT_ENABLED
		t.Errorf("ExtendRuntimeMeasurement = %d, %v", result.GetValue(), err)
	}
	if err := call("attestation_agent.AttestationAgentService", "BindInitData", wrapperspb.Bytes(make([]byte, 32)), new(emptypb.Empty)); err != nil {
		t.Errorf("BindInitData: %v", err)
	}
	tee := new(wrapperspb.StringValue)
	if err := call("attestation_agent.AttestationAgentService", "GetTeeType", new(emptypb.Empty), tee); err != nil || tee.GetValue() != "sample" {
		t.Errorf("GetTeeType = %q, %v", tee.GetValue(), err)
	}
	tees := new(fieldmaskpb.FieldMask)
	if err := call("attestation_agent.AttestationAgentService", "GetAdditionalTees", new(emptypb.Empty), tees); err != nil || len(tees.GetPaths()) != 0 {
		t.Errorf("GetAdditionalTees = %v, %v", tees.GetPaths(), err)
	}
	// A method the protos do not declare.
	err = call("api.GetResourceService", "GetResources", wrapperspb.String("x"), new(wrapperspb.BytesValue))
	if st, _ := status.FromError(err); st.Code() != codes.Unimplemented {
		t.Errorf("unknown method: %v", err)
	}
}
