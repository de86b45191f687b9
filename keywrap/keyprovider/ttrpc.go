package keyprovider

import (
	"context"

	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// RegisterTTRPC registers h as keyprovider.KeyProviderService on a ttrpc
// server: the same service and messages as the gRPC one (guest-components'
// confidential-data-hub/keyprovider.proto is ocicrypt's), as CDH serves it
// on its socket for ocicrypt-rs's "ttrpc" keyprovider (kata-agent writes
// {"attestation-agent":{"ttrpc":"unix:///run/confidential-containers/cdh.sock"}}).
func RegisterTTRPC(s *ttrpc.Server, h Handler) {
	s.Register(ServiceName, map[string]ttrpc.Method{
		methodWrapKey:   ttrpcMethod(h, opKeyWrap),
		methodUnWrapKey: ttrpcMethod(h, opKeyUnwrap),
	})
}

func ttrpcMethod(h Handler, op string) ttrpc.Method {
	return func(ctx context.Context, unmarshal func(any) error) (any, error) {
		in := new(wrapperspb.BytesValue)
		if err := unmarshal(in); err != nil {
			return nil, err
		}
		out, err := handle(ctx, h, op, in.GetValue())
		if err != nil {
			return nil, toStatus(err)
		}
		return wrapperspb.Bytes(out), nil
	}
}
