// Package keyprovider speaks the ocicrypt keyprovider protocol, both as a
// client (a keywrap.Wrapper / keywrap.Unwrapper for the "provider.NAME"
// schemes) and as a server (a Handler served over stdin/stdout or gRPC).
//
// The protocol is one JSON document in, one JSON document out, carried either
// on a command's stdin/stdout ("cmd" providers) or inside the single bytes
// field of the gRPC messages of service keyprovider.KeyProviderService
// ("grpc" providers). The JSON is byte-compatible with
// github.com/containers/ocicrypt: every []byte is standard base64, and the
// EncryptConfig/DecryptConfig keys are the Go field names "Parameters" and
// "DecryptConfig".
//
// What coffer sends (and what it never sends): ocicrypt forwards its whole
// crypto configuration, including other schemes' private keys, to every
// provider. coffer sends only what belongs to the provider being called:
//
//	wrap:   ec.Parameters = {NAME: [params]}  (params "" is sent as "Enabled",
//	        as ocicrypt does for a bare "provider:NAME" recipient)
//	        ec.DecryptConfig.Parameters = {}
//	unwrap: dc.Parameters = {NAME: ["Enabled"]}  (what ocicrypt sends for
//	        "--decryption-key provider:NAME")
//
// Decoders accept []byte fields either as base64 strings (Go ocicrypt) or as
// arrays of numbers (what the Rust serde-based CoCo providers emit).
package keyprovider

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/coffer-dev/coffer/spec"
)

// Protocol operations.
const (
	opKeyWrap   = "keywrap"
	opKeyUnwrap = "keyunwrap"
)

// enabledParam is what ocicrypt sends as the parameter of a provider named
// without parameters ("provider:NAME").
const enabledParam = "Enabled"

// maxMessage bounds every protocol document coffer reads (input or output).
// Real documents are a few KiB; the bound only stops a broken peer from
// exhausting memory.
const maxMessage = 16 << 20

// protocolInput is ocicrypt's KeyProviderKeyWrapProtocolInput.
type protocolInput struct {
	Op              string          `json:"op"`
	KeyWrapParams   keyWrapParams   `json:"keywrapparams"`
	KeyUnwrapParams keyUnwrapParams `json:"keyunwrapparams"`
}

type keyWrapParams struct {
	EC       *encryptConfig `json:"ec"`
	OptsData []byte         `json:"optsdata"`
}

type keyUnwrapParams struct {
	DC         *decryptConfig `json:"dc"`
	Annotation []byte         `json:"annotation"`
}

// encryptConfig mirrors ocicrypt's config.EncryptConfig (no json tags there,
// so the keys are the Go field names).
type encryptConfig struct {
	Parameters    map[string][][]byte `json:"Parameters"`
	DecryptConfig decryptConfig       `json:"DecryptConfig"`
}

type decryptConfig struct {
	Parameters map[string][][]byte `json:"Parameters"`
}

// protocolOutput is ocicrypt's KeyProviderKeyWrapProtocolOutput. Only the
// member of the operation performed is written: ocicrypt writes both, with a
// null inside the other, which serde-based readers reject.
type protocolOutput struct {
	KeyWrapResults   *keyWrapResults   `json:"keywrapresults,omitempty"`
	KeyUnwrapResults *keyUnwrapResults `json:"keyunwrapresults,omitempty"`
}

type keyWrapResults struct {
	Annotation []byte `json:"annotation"`
}

type keyUnwrapResults struct {
	OptsData []byte `json:"optsdata"`
}

// encodeWrapInput builds the keywrap request for provider name.
func encodeWrapInput(name string, params []byte, optsData []byte) ([]byte, error) {
	if len(params) == 0 {
		params = []byte(enabledParam)
	}
	in := protocolInput{
		Op: opKeyWrap,
		KeyWrapParams: keyWrapParams{
			EC: &encryptConfig{
				Parameters:    map[string][][]byte{name: {params}},
				DecryptConfig: decryptConfig{Parameters: map[string][][]byte{}},
			},
			OptsData: optsData,
		},
	}
	return json.Marshal(in)
}

// encodeUnwrapInput builds the keyunwrap request for provider name.
func encodeUnwrapInput(name string, annotation []byte) ([]byte, error) {
	in := protocolInput{
		Op: opKeyUnwrap,
		KeyUnwrapParams: keyUnwrapParams{
			DC:         &decryptConfig{Parameters: map[string][][]byte{name: {[]byte(enabledParam)}}},
			Annotation: annotation,
		},
	}
	return json.Marshal(in)
}

// decodeInput parses a request document (server side). An empty op takes
// defaultOp (the gRPC method called).
func decodeInput(data []byte, defaultOp string) (*protocolInput, error) {
	if len(data) > maxMessage {
		return nil, fmt.Errorf("keyprovider request of %d bytes exceeds the %d-byte limit", len(data), maxMessage)
	}
	var in protocolInput
	if err := strictUnmarshal(data, &in); err != nil {
		return nil, fmt.Errorf("decoding keyprovider request: %w", err)
	}
	if in.Op == "" {
		in.Op = defaultOp
	}
	switch in.Op {
	case opKeyWrap:
		if in.KeyWrapParams.EC == nil {
			return nil, errors.New("keyprovider keywrap request without ec")
		}
		if len(in.KeyWrapParams.OptsData) == 0 {
			return nil, errors.New("keyprovider keywrap request without optsdata")
		}
	case opKeyUnwrap:
		if len(in.KeyUnwrapParams.Annotation) == 0 {
			return nil, errors.New("keyprovider keyunwrap request without annotation")
		}
	default:
		return nil, fmt.Errorf("keyprovider request with unknown op %q: %w", in.Op, spec.ErrUnsupported)
	}
	return &in, nil
}

// encodeWrapOutput and encodeUnwrapOutput build response documents.
func encodeWrapOutput(annotation []byte) ([]byte, error) {
	return json.Marshal(protocolOutput{KeyWrapResults: &keyWrapResults{Annotation: annotation}})
}

func encodeUnwrapOutput(optsData []byte) ([]byte, error) {
	return json.Marshal(protocolOutput{KeyUnwrapResults: &keyUnwrapResults{OptsData: optsData}})
}

// decodeWrapOutput returns the annotation of a keywrap response.
func decodeWrapOutput(data []byte) ([]byte, error) {
	out, err := decodeOutput(data)
	if err != nil {
		return nil, err
	}
	if out.KeyWrapResults == nil || len(out.KeyWrapResults.Annotation) == 0 {
		return nil, errors.New("keyprovider response carries no keywrapresults.annotation")
	}
	return out.KeyWrapResults.Annotation, nil
}

// decodeUnwrapOutput returns the optsdata of a keyunwrap response.
func decodeUnwrapOutput(data []byte) ([]byte, error) {
	out, err := decodeOutput(data)
	if err != nil {
		return nil, err
	}
	if out.KeyUnwrapResults == nil || len(out.KeyUnwrapResults.OptsData) == 0 {
		return nil, errors.New("keyprovider response carries no keyunwrapresults.optsdata")
	}
	return out.KeyUnwrapResults.OptsData, nil
}

func decodeOutput(data []byte) (*protocolOutput, error) {
	if len(data) > maxMessage {
		return nil, fmt.Errorf("keyprovider response of %d bytes exceeds the %d-byte limit", len(data), maxMessage)
	}
	var out protocolOutput
	if err := strictUnmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("decoding keyprovider response: %w", err)
	}
	return &out, nil
}

// strictUnmarshal decodes exactly one JSON value (trailing whitespace only).
// Unknown members are ignored, as every reference reader does.
func strictUnmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON document")
	}
	return nil
}
