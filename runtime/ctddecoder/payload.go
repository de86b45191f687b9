package ctddecoder

import (
	"encoding/json"
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/coffer-dev/coffer/internal/bounded"
	"github.com/coffer-dev/coffer/spec"
)

// PayloadTypeURL is the type URL imgcrypt registers for its stream-processor
// payload (a google.protobuf.Any whose value is JSON).
const PayloadTypeURL = "io.containerd.ocicrypt.v1.Payload"

const (
	// MaxPayload bounds the fd-3 payload: keys and one descriptor.
	MaxPayload = 1 << 20
	maxParams  = 64
	maxValues  = 64
)

// Payload is what a containerd client (ctr-enc, CRI's node key model,
// nerdctl) hands the stream processor on fd 3: ocicrypt DecryptConfig
// parameters ("privkeys", "privkeys-passwords", "x509s",
// "gpg-privatekeys", "gpg-privatekeys-passwords", key provider names) and
// the descriptor of the encrypted layer, annotations included.
type Payload struct {
	Params     map[string][][]byte
	Descriptor *v1.Descriptor
}

type payloadJSON struct {
	DecryptConfig struct {
		Parameters map[string][][]byte
	}
	Descriptor *descJSON
}

// descJSON is an OCI descriptor as imgcrypt marshals it (a zero one has an
// empty digest, which v1.Hash refuses).
type descJSON struct {
	MediaType   string            `json:"mediaType,omitempty"`
	Digest      string            `json:"digest,omitempty"`
	Size        int64             `json:"size,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// ParsePayload decodes the fd-3 bytes. Empty input means no payload (nil,
// nil): plain `ctr images import|pull` sends none.
func ParsePayload(b []byte) (*Payload, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if len(b) > MaxPayload {
		return nil, fmt.Errorf("stream processor payload is %d bytes, over the %d limit: %w", len(b), MaxPayload, spec.ErrUnsupported)
	}
	var a anypb.Any
	if err := proto.Unmarshal(b, &a); err != nil {
		return nil, fmt.Errorf("stream processor payload on fd 3 is not a protobuf Any: %w", spec.ErrUnsupported)
	}
	if u := a.GetTypeUrl(); u != PayloadTypeURL && !strings.HasSuffix(u, "/"+PayloadTypeURL) {
		return nil, fmt.Errorf("stream processor payload has type %q, want %s: %w", printable(u), PayloadTypeURL, spec.ErrUnsupported)
	}
	var pj payloadJSON
	if err := json.Unmarshal(a.GetValue(), &pj); err != nil {
		return nil, fmt.Errorf("stream processor payload: malformed JSON: %w", spec.ErrUnsupported)
	}
	if len(pj.DecryptConfig.Parameters) > maxParams {
		return nil, fmt.Errorf("stream processor payload has %d decrypt parameters, over %d: %w", len(pj.DecryptConfig.Parameters), maxParams, spec.ErrUnsupported)
	}
	for k, v := range pj.DecryptConfig.Parameters {
		if len(v) > maxValues {
			return nil, fmt.Errorf("stream processor payload parameter %q has %d values, over %d: %w", printable(k), len(v), maxValues, spec.ErrUnsupported)
		}
	}
	out := &Payload{Params: pj.DecryptConfig.Parameters}
	if d := pj.Descriptor; d != nil && (d.Digest != "" || len(d.Annotations) > 0) {
		out.Descriptor = &v1.Descriptor{MediaType: types.MediaType(d.MediaType), Size: d.Size, Annotations: d.Annotations}
		if d.Digest != "" {
			h, err := v1.NewHash(d.Digest)
			if err != nil {
				return nil, fmt.Errorf("stream processor payload: descriptor digest %q: %w", printable(d.Digest), spec.ErrUnsupported)
			}
			out.Descriptor.Digest = h
		}
	}
	return out, nil
}

func printable(s string) string { return bounded.Printable(s, 64) }
