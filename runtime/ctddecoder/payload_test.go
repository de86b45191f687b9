package ctddecoder

import (
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/spec"
)

// marshalPayload encodes p as containerd sends it on fd 3.
func marshalPayload(t testing.TB, p Payload) []byte {
	var pj payloadJSON
	pj.DecryptConfig.Parameters = p.Params
	if d := p.Descriptor; d != nil {
		pj.Descriptor = &descJSON{MediaType: string(d.MediaType), Size: d.Size, Annotations: d.Annotations}
		if d.Digest != (v1.Hash{}) {
			pj.Descriptor.Digest = d.Digest.String()
		}
	}
	v, err := json.Marshal(pj)
	if err != nil {
		t.Fatal(err)
	}
	b, err := proto.Marshal(&anypb.Any{TypeUrl: PayloadTypeURL, Value: v})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func equalPayload(a, b *Payload) bool {
	if (a == nil) != (b == nil) {
		return false
	}
	if a == nil {
		return true
	}
	if !maps.EqualFunc(a.Params, b.Params, func(x, y [][]byte) bool {
		return slices.EqualFunc(x, y, func(p, q []byte) bool { return string(p) == string(q) })
	}) {
		return false
	}
	if (a.Descriptor == nil) != (b.Descriptor == nil) {
		return false
	}
	return a.Descriptor == nil || (a.Descriptor.Digest == b.Descriptor.Digest && maps.Equal(a.Descriptor.Annotations, b.Descriptor.Annotations))
}

func TestParsePayloadBounds(t *testing.T) {
	t.Parallel()
	many := map[string][][]byte{}
	for i := range maxParams + 1 {
		many[string(rune('a'+i%26))+string(rune('a'+i/26))] = nil
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"empty is no payload", nil, nil},
		{"too large", make([]byte, MaxPayload+1), spec.ErrUnsupported},
		{"wrong type url", func() []byte { b, _ := proto.Marshal(&anypb.Any{TypeUrl: "x.y/z", Value: []byte("{}")}); return b }(), spec.ErrUnsupported},
		{"too many parameters", marshalPayload(t, Payload{Params: many}), spec.ErrUnsupported},
		{"too many values", marshalPayload(t, Payload{Params: map[string][][]byte{"privkeys": make([][]byte, maxValues+1)}}), spec.ErrUnsupported},
		{"good", marshalPayload(t, Payload{Params: map[string][][]byte{"privkeys": {[]byte("k")}}, Descriptor: &v1.Descriptor{MediaType: "m"}}), nil},
	} {
		_, err := ParsePayload(tc.in)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
}

// Oracle: whatever ParsePayload accepts is within bounds and survives an
// encode/parse round trip unchanged.
func FuzzParsePayload(f *testing.F) {
	f.Add(marshalPayload(f, Payload{Params: map[string][][]byte{"privkeys": {[]byte("k")}, "privkeys-passwords": {nil}}}))
	f.Add(marshalPayload(f, Payload{Descriptor: &v1.Descriptor{MediaType: "m", Annotations: map[string]string{"a": "b"}}}))
	f.Add([]byte("\x0a\x01x"))
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		p, err := ParsePayload(b)
		if err != nil || p == nil {
			return
		}
		if len(p.Params) > maxParams {
			t.Fatalf("accepted %d parameters", len(p.Params))
		}
		for _, v := range p.Params {
			if len(v) > maxValues {
				t.Fatalf("accepted %d values", len(v))
			}
		}
		q, err := ParsePayload(marshalPayload(t, *p))
		if err != nil || !equalPayload(p, q) {
			t.Fatalf("round trip changed the payload: %v", err)
		}
	})
}
