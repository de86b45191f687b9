package keyprovider

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// Handler implements the provider side of the protocol.
type Handler interface {
	// WrapKey wraps optsData (the layer's private options) and returns the
	// annotation entry. params is the request's ec.Parameters: the handler
	// picks its own entry (e.g. params["attestation-agent"]).
	WrapKey(ctx context.Context, params map[string][][]byte, optsData []byte) (annotation []byte, err error)
	// UnwrapKey recovers the private options from an annotation entry.
	// dcParams is the request's dc.Parameters (possibly empty).
	UnwrapKey(ctx context.Context, dcParams map[string][][]byte, annotation []byte) (optsData []byte, err error)
}

// errBadRequest marks malformed protocol input (gRPC InvalidArgument).
var errBadRequest = errors.New("bad keyprovider request")

// ServeCmd serves one request read from in (to EOF) and writes the response
// to out, as an ocicrypt "cmd" provider does on stdin/stdout. On error
// nothing is written to out and the caller should exit non-zero.
func ServeCmd(ctx context.Context, h Handler, in io.Reader, out io.Writer) error {
	data, err := io.ReadAll(io.LimitReader(in, maxMessage+1))
	if err != nil {
		return fmt.Errorf("reading keyprovider request: %w", err)
	}
	resp, err := handle(ctx, h, "", data)
	if err != nil {
		return err
	}
	if _, err := out.Write(resp); err != nil {
		return fmt.Errorf("writing keyprovider response: %w", err)
	}
	return nil
}

// handle decodes a request, checks it matches op (when op is set, as for the
// gRPC methods), dispatches it to h and encodes the response.
func handle(ctx context.Context, h Handler, op string, data []byte) ([]byte, error) {
	in, err := decodeInput(data, op)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBadRequest, err)
	}
	if op != "" && in.Op != op {
		return nil, fmt.Errorf("%w: op %q sent to the %s method", errBadRequest, in.Op, op)
	}
	switch in.Op {
	case opKeyWrap:
		params := in.KeyWrapParams.EC.Parameters
		if params == nil {
			params = map[string][][]byte{}
		}
		ann, err := h.WrapKey(ctx, params, in.KeyWrapParams.OptsData)
		if err != nil {
			return nil, fmt.Errorf("keywrap: %w", err)
		}
		if len(ann) == 0 {
			return nil, errors.New("keywrap: handler returned an empty annotation")
		}
		return encodeWrapOutput(ann)
	default: // opKeyUnwrap; decodeInput rejects anything else
		var dc map[string][][]byte
		if in.KeyUnwrapParams.DC != nil {
			dc = in.KeyUnwrapParams.DC.Parameters
		}
		if dc == nil {
			dc = map[string][][]byte{}
		}
		opts, err := h.UnwrapKey(ctx, dc, in.KeyUnwrapParams.Annotation)
		if err != nil {
			return nil, fmt.Errorf("keyunwrap: %w", err)
		}
		if len(opts) == 0 {
			return nil, errors.New("keyunwrap: handler returned empty optsdata")
		}
		return encodeUnwrapOutput(opts)
	}
}
