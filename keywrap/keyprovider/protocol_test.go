package keyprovider

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	occonfig "github.com/containers/ocicrypt/config"
	ockp "github.com/containers/ocicrypt/keywrap/keyprovider"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/spec"
)

// Templates copied verbatim from /work/shared/WIRE.md §2.
const (
	wireWrapIn    = `{"op":"keywrap","keywrapparams":{"ec":{"Parameters":{"NAME":["<b64 params>"]},"DecryptConfig":{"Parameters":{}}},"optsdata":"<b64 privopts>"},"keyunwrapparams":{"dc":null,"annotation":null}}`
	wireWrapOut   = `{"keywrapresults":{"annotation":"<b64>"}}`
	wireUnwrapIn  = `{"op":"keyunwrap","keywrapparams":{"ec":null,"optsdata":null},"keyunwrapparams":{"dc":{"Parameters":{...}},"annotation":"<b64>"}}`
	wireUnwrapOut = `{"keyunwrapresults":{"optsdata":"<b64 privopts>"}}`
)

var (
	testPrivopts   = []byte(`{"symkey":"MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MTI=","digest":"sha256:00","cipheroptions":{"nonce":"MDEyMzQ1Njc4OWFiY2RlZg=="}}`)
	testAnnotation = []byte(`{"kid":"kbs:///default/image_key/nginx","wrapped_data":"AAAA","iv":"AAAAAAAAAAAAAAAA","wrap_type":"A256GCM"}`)
)

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func TestProtocolGolden(t *testing.T) {
	const name = "attestation-agent"
	params := []byte("keypath=/k::keyid=kbs:///default/image_key/nginx::algorithm=A256GCM")
	tests := []struct {
		what string
		got  func() ([]byte, error)
		want string
	}{
		{"wrap input", func() ([]byte, error) { return encodeWrapInput(name, params, testPrivopts) },
			strings.NewReplacer("NAME", name, "<b64 params>", b64(params), "<b64 privopts>", b64(testPrivopts)).Replace(wireWrapIn)},
		{"wrap input without params", func() ([]byte, error) { return encodeWrapInput(name, nil, testPrivopts) },
			strings.NewReplacer("NAME", name, "<b64 params>", b64([]byte("Enabled")), "<b64 privopts>", b64(testPrivopts)).Replace(wireWrapIn)},
		{"wrap output", func() ([]byte, error) { return encodeWrapOutput(testAnnotation) },
			strings.NewReplacer("<b64>", b64(testAnnotation)).Replace(wireWrapOut)},
		{"unwrap input", func() ([]byte, error) { return encodeUnwrapInput(name, testAnnotation) },
			strings.NewReplacer(`{...}`, `{"`+name+`":["`+b64([]byte("Enabled"))+`"]}`, "<b64>", b64(testAnnotation)).Replace(wireUnwrapIn)},
		{"unwrap output", func() ([]byte, error) { return encodeUnwrapOutput(testPrivopts) },
			strings.NewReplacer("<b64 privopts>", b64(testPrivopts)).Replace(wireUnwrapOut)},
	}
	for _, tt := range tests {
		t.Run(tt.what, func(t *testing.T) {
			got, err := tt.got()
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

// TestProtocolMatchesOcicrypt marshals ocicrypt's own structs with the
// values coffer sends and requires identical bytes.
func TestProtocolMatchesOcicrypt(t *testing.T) {
	const name = "p1"
	params := []byte("some=params")
	ours, err := encodeWrapInput(name, params, testPrivopts)
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := json.Marshal(ockp.KeyProviderKeyWrapProtocolInput{
		Operation: ockp.OpKeyWrap,
		KeyWrapParams: ockp.KeyWrapParams{
			Ec: &occonfig.EncryptConfig{
				Parameters:    map[string][][]byte{name: {params}},
				DecryptConfig: occonfig.DecryptConfig{Parameters: map[string][][]byte{}},
			},
			OptsData: testPrivopts,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ours, theirs) {
		t.Errorf("wrap input:\n got %s\nwant %s", ours, theirs)
	}

	ours, err = encodeUnwrapInput(name, testAnnotation)
	if err != nil {
		t.Fatal(err)
	}
	theirs, err = json.Marshal(ockp.KeyProviderKeyWrapProtocolInput{
		Operation: ockp.OpKeyUnwrap,
		KeyUnwrapParams: ockp.KeyUnwrapParams{
			Dc:         &occonfig.DecryptConfig{Parameters: map[string][][]byte{name: {[]byte("Enabled")}}},
			Annotation: testAnnotation,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ours, theirs) {
		t.Errorf("unwrap input:\n got %s\nwant %s", ours, theirs)
	}
}

func TestDecodeOutputForms(t *testing.T) {
	arr := func(b []byte) string {
		var parts []string
		for _, c := range b {
			parts = append(parts, strings.TrimSpace(string(mustJSON(t, int(c)))))
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	wrapTests := []struct {
		what, doc string
		want      []byte
		wantErr   bool
	}{
		{"coffer/WIRE form", `{"keywrapresults":{"annotation":"` + b64(testAnnotation) + `"}}`, testAnnotation, false},
		{"ocicrypt form (both members)", `{"keywrapresults":{"annotation":"` + b64(testAnnotation) + `"},"keyunwrapresults":{"optsdata":null}}`, testAnnotation, false},
		{"CoCo serde form (number array)", `{"keywrapresults":{"annotation":` + arr(testAnnotation) + `}}`, testAnnotation, false},
		{"trailing whitespace", "{\"keywrapresults\":{\"annotation\":\"QQ==\"}}\n", []byte("A"), false},
		{"no annotation", `{"keywrapresults":{"annotation":null}}`, nil, true},
		{"unwrap results only", `{"keyunwrapresults":{"optsdata":"QQ=="}}`, nil, true},
		{"not base64", `{"keywrapresults":{"annotation":"!!"}}`, nil, true},
		{"trailing garbage", `{"keywrapresults":{"annotation":"QQ=="}} x`, nil, true},
		{"two documents", `{"keywrapresults":{"annotation":"QQ=="}}{}`, nil, true},
		{"null", `null`, nil, true},
		{"empty", ``, nil, true},
	}
	for _, tt := range wrapTests {
		t.Run("wrap/"+tt.what, func(t *testing.T) {
			got, err := decodeWrapOutput([]byte(tt.doc))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	got, err := decodeUnwrapOutput([]byte(`{"keyunwrapresults":{"optsdata":` + arr(testPrivopts) + `}}`))
	if err != nil || !bytes.Equal(got, testPrivopts) {
		t.Errorf("unwrap number-array form: got %q, %v; want %q", got, err, testPrivopts)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeInput(t *testing.T) {
	wrapIn, _ := encodeWrapInput("x", []byte("p"), testPrivopts)
	unwrapIn, _ := encodeUnwrapInput("x", testAnnotation)
	tests := []struct {
		what, doc, defaultOp string
		wantOp               string
		wantErr              error // nil: success; errAny: some error
	}{
		{"wrap", string(wrapIn), "", opKeyWrap, nil},
		{"unwrap", string(unwrapIn), "", opKeyUnwrap, nil},
		{"op from gRPC method", `{"keyunwrapparams":{"annotation":"QQ=="}}`, opKeyUnwrap, opKeyUnwrap, nil},
		{"unwrap without dc (ocicrypt-rs may send null)", `{"op":"keyunwrap","keyunwrapparams":{"dc":null,"annotation":"QQ=="}}`, "", opKeyUnwrap, nil},
		{"unknown op", `{"op":"keyrotate"}`, "", "", spec.ErrUnsupported},
		{"wrap without ec", `{"op":"keywrap","keywrapparams":{"ec":null,"optsdata":"QQ=="}}`, "", "", errAny},
		{"wrap without optsdata", `{"op":"keywrap","keywrapparams":{"ec":{"Parameters":{}}}}`, "", "", errAny},
		{"unwrap without annotation", `{"op":"keyunwrap","keyunwrapparams":{"dc":{"Parameters":{}}}}`, "", "", errAny},
		{"bad base64", `{"op":"keyunwrap","keyunwrapparams":{"annotation":"%%%"}}`, "", "", errAny},
		{"not an object", `[1,2]`, "", "", errAny},
		{"trailing", string(unwrapIn) + "]", "", "", errAny},
	}
	for _, tt := range tests {
		t.Run(tt.what, func(t *testing.T) {
			in, err := decodeInput([]byte(tt.doc), tt.defaultOp)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tt.wantErr == nil:
				if in.Op != tt.wantOp {
					t.Errorf("op = %q, want %q", in.Op, tt.wantOp)
				}
			case err == nil:
				t.Fatalf("got no error, want %v", tt.wantErr)
			case tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

var errAny = errors.New("any error")

func FuzzDecodeInput(f *testing.F) {
	wrapIn, _ := encodeWrapInput("x", []byte("p"), testPrivopts)
	unwrapIn, _ := encodeUnwrapInput("x", testAnnotation)
	f.Add(wrapIn, "")
	f.Add(unwrapIn, opKeyUnwrap)
	f.Add([]byte(`{"op":"keywrap","keywrapparams":{"ec":{"Parameters":{"a":[[1,2]]}},"optsdata":[1]}}`), opKeyWrap)
	f.Add([]byte(`null`), "")
	f.Fuzz(func(t *testing.T, data []byte, op string) {
		fuzzbound.Limit(t, fuzzbound.Default)
		in, err := decodeInput(data, op)
		if err != nil {
			return
		}
		switch in.Op {
		case opKeyWrap:
			if in.KeyWrapParams.EC == nil || len(in.KeyWrapParams.OptsData) == 0 {
				t.Fatalf("accepted a keywrap request without ec or optsdata: %q", data)
			}
		case opKeyUnwrap:
			if len(in.KeyUnwrapParams.Annotation) == 0 {
				t.Fatalf("accepted a keyunwrap request without annotation: %q", data)
			}
		default:
			t.Fatalf("accepted op %q", in.Op)
		}
	})
}

func FuzzDecodeOutput(f *testing.F) {
	w, _ := encodeWrapOutput(testAnnotation)
	u, _ := encodeUnwrapOutput(testPrivopts)
	f.Add(w)
	f.Add(u)
	f.Add([]byte(`{"keywrapresults":{"annotation":[1,2,3]},"keyunwrapresults":{"optsdata":null}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		if ann, err := decodeWrapOutput(data); err == nil {
			// What was accepted re-encodes to a document that decodes to the same bytes.
			again, err := encodeWrapOutput(ann)
			if err != nil {
				t.Fatal(err)
			}
			back, err := decodeWrapOutput(again)
			if err != nil || !bytes.Equal(back, ann) {
				t.Fatalf("wrap output round trip: %q → %q, %v", ann, back, err)
			}
		}
		if opts, err := decodeUnwrapOutput(data); err == nil && len(opts) == 0 {
			t.Fatal("accepted empty optsdata")
		}
	})
}
