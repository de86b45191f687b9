package aa

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	occonfig "github.com/containers/ocicrypt/config"
	kpconfig "github.com/containers/ocicrypt/config/keyprovider-config"
	ockp "github.com/containers/ocicrypt/keywrap/keyprovider"
	"google.golang.org/grpc"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/keywrap/keyprovider"
	"github.com/coffer-dev/coffer/resource"
	"github.com/coffer-dev/coffer/spec"
)

const testKID = "kbs:///default/image_key/nginx"

var (
	testKEK      = []byte("0123456789abcdef0123456789abcdef")
	otherKEK     = []byte("fedcba9876543210fedcba9876543210")
	testPrivopts = []byte(`{"symkey":"MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MTI=","digest":"sha256:00","cipheroptions":{"nonce":"MDEyMzQ1Njc4OWFiY2RlZg=="}}`)
)

// resolverFor returns a KeyResolver that knows only kid→kek and records calls.
func resolverFor(kid string, kek []byte, calls *[]string) KeyResolver {
	return func(_ context.Context, k string) ([]byte, error) {
		if calls != nil {
			*calls = append(*calls, k)
		}
		if k != kid {
			return nil, fmt.Errorf("resource %s: %w", k, spec.ErrNotFound)
		}
		return bytes.Clone(kek), nil
	}
}

// referenceAnnotation builds an entry the way guest-components'
// coco_keyprovider does (serde JSON of AnnotationPacket, fields in
// declaration order), by hand, independently of the package code.
func referenceAnnotation(t *testing.T, kek, iv, plaintext []byte, kid string) []byte {
	t.Helper()
	block, err := aes.NewCipher(kek)
	if err != nil {
		t.Fatal(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	ct := gcm.Seal(nil, iv, plaintext, nil)
	return []byte(`{"kid":"` + kid + `","wrapped_data":"` + base64.StdEncoding.EncodeToString(ct) +
		`","iv":"` + base64.StdEncoding.EncodeToString(iv) + `","wrap_type":"A256GCM"}`)
}

func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
	w, err := NewWrapper(testKEK, testKID)
	if err != nil {
		t.Fatal(err)
	}
	if got := w.Scheme(); got != "provider.attestation-agent" {
		t.Errorf("Scheme() = %q", got)
	}
	a1, err := w.Wrap(ctx, testPrivopts)
	if err != nil {
		t.Fatal(err)
	}
	a2, _ := w.Wrap(ctx, testPrivopts)

	// Exact shape: the four members in guest-components' order.
	shape := regexp.MustCompile(`^\{"kid":"kbs:///default/image_key/nginx","wrapped_data":"[A-Za-z0-9+/]+=*","iv":"[A-Za-z0-9+/]{16}","wrap_type":"A256GCM"\}$`)
	if !shape.Match(a1) {
		t.Errorf("annotation %s does not have the AnnotationPacket shape", a1)
	}
	var p1, p2 packet
	_ = json.Unmarshal(a1, &p1)
	_ = json.Unmarshal(a2, &p2)
	if p1.IV == p2.IV {
		t.Error("two Wraps used the same iv")
	}
	ct, _ := base64.StdEncoding.DecodeString(p1.WrappedData)
	if got, want := len(ct), len(testPrivopts)+16; got != want {
		t.Errorf("wrapped_data is %d bytes, want %d (plaintext + GCM tag)", got, want)
	}

	var calls []string
	u := NewUnwrapper(resolverFor(testKID, testKEK, &calls))
	if got := u.Scheme(); got != "provider.attestation-agent" {
		t.Errorf("Scheme() = %q", got)
	}
	for _, a := range [][]byte{a1, a2} {
		got, err := u.Unwrap(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, testPrivopts) {
			t.Errorf("unwrapped %q, want %q", got, testPrivopts)
		}
	}
	if want := []string{testKID, testKID}; strings.Join(calls, " ") != strings.Join(want, " ") {
		t.Errorf("resolver called with %q, want %q", calls, want)
	}
	if kid, err := Describe(a1); err != nil || kid != testKID {
		t.Errorf("Describe = %q, %v; want %q", kid, err, testKID)
	}
}

func TestReferenceShapedAnnotations(t *testing.T) {
	iv := []byte("fixed-iv-12b")
	v1 := referenceAnnotation(t, testKEK, iv, testPrivopts, testKID)
	// guest-components' AnnotationPacketV2 with provider "kbs".
	var m map[string]any
	_ = json.Unmarshal(v1, &m)
	m["version"], m["provider"], m["provider_settings"], m["annotations"] = "0.1.0", "kbs", map[string]any{}, map[string]any{}
	v2, _ := json.Marshal(m)
	// A kid naming a broker host: the host is ignored, the resource path is what counts.
	withHost := referenceAnnotation(t, testKEK, iv, testPrivopts, "kbs://kbs.example:8080/default/image_key/nginx")

	tests := []struct {
		what  string
		entry []byte
		kid   string
	}{
		{"v1", v1, testKID},
		{"v2 kbs", v2, testKID},
		{"kid with host", withHost, "kbs://kbs.example:8080/default/image_key/nginx"},
	}
	for _, tt := range tests {
		t.Run(tt.what, func(t *testing.T) {
			u := NewUnwrapper(resolverFor(tt.kid, testKEK, nil))
			got, err := u.Unwrap(context.Background(), tt.entry)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, testPrivopts) {
				t.Errorf("unwrapped %q, want %q", got, testPrivopts)
			}
		})
	}
}

func TestUnwrapFailures(t *testing.T) {
	iv := []byte("fixed-iv-12b")
	good := referenceAnnotation(t, testKEK, iv, testPrivopts, testKID)
	edit := func(field, value string) []byte {
		var m map[string]any
		_ = json.Unmarshal(good, &m)
		if value == "<delete>" {
			delete(m, field)
		} else {
			m[field] = value
		}
		b, _ := json.Marshal(m)
		return b
	}
	var p packet
	_ = json.Unmarshal(good, &p)
	ct, _ := base64.StdEncoding.DecodeString(p.WrappedData)
	ct[0] ^= 1
	flippedCT := base64.StdEncoding.EncodeToString(ct)

	denied := func(context.Context, string) ([]byte, error) {
		return nil, fmt.Errorf("broker said no: %w", spec.ErrPolicyDenied)
	}
	short := func(context.Context, string) ([]byte, error) { return testKEK[:16], nil }

	tests := []struct {
		what     string
		entry    []byte
		resolve  KeyResolver
		wantIs   []error
		wantText string
	}{
		{"wrong KEK", good, resolverFor(testKID, otherKEK, nil), []error{spec.ErrIntegrity},
			"attestation-agent: unwrapping layer key for kbs:///default/image_key/nginx: wrong key or tampered annotation"},
		{"tampered iv", edit("iv", base64.StdEncoding.EncodeToString([]byte("other-iv-12b"))), nil, []error{spec.ErrIntegrity}, "wrong key or tampered annotation"},
		{"tampered wrapped_data", edit("wrapped_data", flippedCT), nil, []error{spec.ErrIntegrity}, "wrong key or tampered annotation"},
		{"iv of 16 bytes", edit("iv", base64.StdEncoding.EncodeToString(make([]byte, 16))), nil, []error{spec.ErrIntegrity}, "iv of kbs:///default/image_key/nginx is 16 bytes"},
		{"iv not base64", edit("iv", "!!"), nil, nil, "iv of"},
		{"A256CTR", edit("wrap_type", "A256CTR"), nil, []error{spec.ErrUnsupported}, "wrap_type"},
		{"bad kid", edit("kid", "kbs:///only/two"), nil, nil, "invalid kid"},
		{"kid of a KBS plugin", edit("kid", "kbs+pkcs11:///a/b/c"), nil, []error{spec.ErrUnsupported}, "plugin"},
		{"missing iv", edit("iv", "<delete>"), nil, nil, "lacks"},
		{"v2 other provider", edit("provider", "aliyun"), nil, []error{spec.ErrUnsupported}, "aliyun"},
		{"v2 other version", edit("version", "0.2.0"), nil, []error{spec.ErrUnsupported}, "version"},
		{"not json", []byte("{"), nil, nil, "decoding"},
		{"policy denial", good, denied, []error{spec.ErrPolicyDenied, spec.ErrNoKey}, "broker said no"},
		{"unknown kid", good, resolverFor("kbs:///x/y/z", testKEK, nil), []error{spec.ErrNotFound, spec.ErrNoKey}, "fetching key"},
		{"short KEK", good, short, []error{spec.ErrIntegrity}, "16 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.what, func(t *testing.T) {
			resolve := tt.resolve
			if resolve == nil {
				resolve = resolverFor(testKID, testKEK, nil)
			}
			got, err := NewUnwrapper(resolve).Unwrap(context.Background(), tt.entry)
			if err == nil {
				t.Fatalf("unwrapped %q, want an error", got)
			}
			for _, s := range tt.wantIs {
				if !errors.Is(err, s) {
					t.Errorf("error %q does not wrap %v", err, s)
				}
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %q lacks %q", err, tt.wantText)
			}
			if strings.Contains(err.Error(), string(testKEK)) || strings.Contains(err.Error(), "symkey") {
				t.Errorf("error %q leaks key material", err)
			}
		})
	}

	if _, err := NewUnwrapper(nil).Unwrap(context.Background(), good); !errors.Is(err, spec.ErrNoKey) {
		t.Errorf("nil resolver: err = %v, want ErrNoKey", err)
	}
}

func TestNewWrapperRejects(t *testing.T) {
	if _, err := NewWrapper(testKEK[:31], testKID); err == nil {
		t.Error("accepted a 31-byte KEK")
	}
	if _, err := NewWrapper(testKEK, "kbs:///a/b"); err == nil {
		t.Error("accepted a kid with two path parts")
	}
}

var errAny = errors.New("any error")

func TestParseParams(t *testing.T) {
	tests := []struct {
		in      string
		want    Params
		wantErr error
	}{
		{in: "keypath=/k::keyid=kbs:///default/image_key/nginx::algorithm=A256GCM", want: Params{"/k", testKID, "A256GCM"}},
		{in: "provider:attestation-agent:keypath=/k::keyid=kbs:///default/image_key/nginx::algorithm=A256GCM", want: Params{"/k", testKID, "A256GCM"}},
		{in: "attestation-agent:keyid=kbs:///default/image_key/nginx::keypath=/k", want: Params{"/k", testKID, "A256GCM"}},
		{in: "keyid=kbs:///default/image_key/nginx", want: Params{"", testKID, "A256GCM"}},
		{in: "keyid=kbs://kbs:8080/r/t/g::", want: Params{"", "kbs://kbs:8080/r/t/g", "A256GCM"}},
		{in: "keypath=/k::keyid=kbs:///a/b/c::algorithm=A256CTR", wantErr: spec.ErrUnsupported},
		{in: "keypath=/k", wantErr: errAny},
		{in: "keypath=/k::keyid=kbs:///a/b", wantErr: errAny},
		{in: "keypath=/k::keyid=kbs:///a/b/c::colour=red", wantErr: errAny},
		{in: "keypath=/k::keypath=/j::keyid=kbs:///a/b/c", wantErr: errAny},
		{in: "sample=true::keyid=kbs:///a/b/c", wantErr: spec.ErrUnsupported},
		{in: "keypath::keyid=kbs:///a/b/c", wantErr: errAny},
		{in: "keypath=::keyid=kbs:///a/b/c", wantErr: errAny},
		{in: "", wantErr: errAny},
	}
	for _, tt := range tests {
		got, err := ParseParams(tt.in)
		switch {
		case tt.wantErr == nil && err != nil:
			t.Errorf("ParseParams(%q): %v", tt.in, err)
		case tt.wantErr == nil && got != tt.want:
			t.Errorf("ParseParams(%q) = %+v, want %+v", tt.in, got, tt.want)
		case tt.wantErr != nil && err == nil:
			t.Errorf("ParseParams(%q) = %+v, want an error", tt.in, got)
		case tt.wantErr != nil && tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
			t.Errorf("ParseParams(%q) err = %v, want %v", tt.in, err, tt.wantErr)
		}
	}
	p := Params{KeyPath: "/k", KeyID: testKID}
	if got, want := p.String(), "keypath=/k::keyid=kbs:///default/image_key/nginx::algorithm=A256GCM"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func writeKEK(t *testing.T, kek []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kek.bin")
	if err := os.WriteFile(p, kek, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHandler(t *testing.T) {
	ctx := context.Background()
	kekPath := writeKEK(t, testKEK)
	h := NewHandler(resolverFor(testKID, testKEK, nil))
	params := map[string][][]byte{ProviderName: {[]byte("keypath=" + kekPath + "::keyid=" + testKID + "::algorithm=A256GCM")}}
	ann, err := h.WrapKey(ctx, params, testPrivopts)
	if err != nil {
		t.Fatal(err)
	}
	if kid, err := Describe(ann); err != nil || kid != testKID {
		t.Errorf("Describe = %q, %v", kid, err)
	}
	got, err := h.UnwrapKey(ctx, map[string][][]byte{ProviderName: {[]byte("Enabled")}}, ann)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, testPrivopts) {
		t.Errorf("unwrapped %q, want %q", got, testPrivopts)
	}

	bad := []struct {
		what   string
		params map[string][][]byte
	}{
		{"no parameters", map[string][][]byte{"other": {[]byte("x")}}},
		{"two parameter sets", map[string][][]byte{ProviderName: {params[ProviderName][0], params[ProviderName][0]}}},
		{"no keypath", map[string][][]byte{ProviderName: {[]byte("keyid=" + testKID)}}},
		{"KEK file of 31 bytes", map[string][][]byte{ProviderName: {[]byte("keypath=" + writeKEK(t, testKEK[:31]) + "::keyid=" + testKID)}}},
		{"KEK path is a directory", map[string][][]byte{ProviderName: {[]byte("keypath=" + t.TempDir() + "::keyid=" + testKID)}}},
		{"missing KEK file", map[string][][]byte{ProviderName: {[]byte("keypath=/nonexistent/kek::keyid=" + testKID)}}},
	}
	for _, tt := range bad {
		if _, err := h.WrapKey(ctx, tt.params, testPrivopts); err == nil {
			t.Errorf("%s: WrapKey succeeded", tt.what)
		}
	}
}

// TestOcicryptThroughHandler: ocicrypt's keyprovider key wrapper, configured
// with "provider:attestation-agent:keypath=…::keyid=…" as skopeo would be,
// wraps and unwraps through the attestation-agent handler served by
// keyprovider.RegisterGRPC.
func TestOcicryptThroughHandler(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	keyprovider.RegisterGRPC(s, NewHandler(resolverFor(testKID, testKEK, nil)))
	go func() { _ = s.Serve(lis) }()
	defer s.Stop()

	cc, err := occonfig.EncryptWithKeyProvider([][]byte{[]byte("attestation-agent:keypath=" + writeKEK(t, testKEK) + "::keyid=" + testKID + "::algorithm=A256GCM")})
	if err != nil {
		t.Fatal(err)
	}
	kw := ockp.NewKeyWrapper(ProviderName, kpconfig.KeyProviderAttrs{Grpc: lis.Addr().String()})
	ann, err := kw.WrapKeys(cc.EncryptConfig, testPrivopts)
	if err != nil {
		t.Fatal(err)
	}
	// The annotation is also what a CoCo guest would read: unwrap it with an
	// independent GCM open.
	var p packet
	if err := json.Unmarshal(ann, &p); err != nil || p.KID != testKID || p.WrapType != "A256GCM" {
		t.Fatalf("annotation %s (%v)", ann, err)
	}
	iv, _ := base64.StdEncoding.DecodeString(p.IV)
	ct, _ := base64.StdEncoding.DecodeString(p.WrappedData)
	block, _ := aes.NewCipher(testKEK)
	gcm, _ := cipher.NewGCM(block)
	if pt, err := gcm.Open(nil, iv, ct, nil); err != nil || !bytes.Equal(pt, testPrivopts) {
		t.Errorf("independent open: %q, %v", pt, err)
	}

	dcc, err := occonfig.DecryptWithKeyProvider([][]byte{[]byte("attestation-agent")})
	if err != nil {
		t.Fatal(err)
	}
	got, err := kw.UnwrapKey(dcc.DecryptConfig, ann)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, testPrivopts) {
		t.Errorf("ocicrypt unwrapped %q, want %q", got, testPrivopts)
	}
}

func FuzzParseParams(f *testing.F) {
	f.Add("keypath=/k::keyid=kbs:///default/image_key/nginx::algorithm=A256GCM")
	f.Add("provider:attestation-agent:keyid=kbs://h:1/a/b/c")
	f.Add("sample=true")
	f.Fuzz(func(t *testing.T, s string) {
		fuzzbound.Limit(t, fuzzbound.Default)
		p, err := ParseParams(s)
		if err != nil {
			return
		}
		if p.Algorithm != AlgorithmA256GCM {
			t.Fatalf("accepted algorithm %q", p.Algorithm)
		}
		if _, err := resource.ParseKID(p.KeyID); err != nil {
			t.Fatalf("accepted invalid kid %q", p.KeyID)
		}
		if !strings.Contains(p.KeyPath, "::") {
			again, err := ParseParams(p.String())
			if err != nil || again != p {
				t.Fatalf("String() round trip: %+v → %q → %+v, %v", p, p.String(), again, err)
			}
		}
	})
}

func FuzzAnnotation(f *testing.F) {
	w, _ := NewWrapper(testKEK, testKID)
	good, _ := w.Wrap(context.Background(), testPrivopts)
	f.Add(good)
	f.Add([]byte(`{"version":"0.1.0","provider":"kbs","kid":"kbs:///a/b/c","wrapped_data":"AAAAAAAAAAAAAAAAAAAAAA==","iv":"AAAAAAAAAAAAAAAA","wrap_type":"A256GCM"}`))
	f.Add([]byte(`{"kid":1}`))
	u := NewUnwrapper(resolverFor(testKID, testKEK, nil))
	f.Fuzz(func(t *testing.T, entry []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		kid, derr := Describe(entry)
		pt, uerr := u.Unwrap(context.Background(), entry)
		if derr != nil && uerr == nil {
			t.Fatalf("Unwrap accepted what Describe rejects: %v", derr)
		}
		if uerr == nil {
			if kid != testKID {
				t.Fatalf("unwrapped an entry for kid %q", kid)
			}
			if len(pt) == 0 && !bytes.Contains(entry, []byte("wrapped_data")) {
				t.Fatal("unwrapped without wrapped_data")
			}
		}
	})
}

// A resource.Getter (the broker client) is asked by the path the entry's
// kid names, parsed once with the entry: no kid string to parse again.
func TestUnwrapAsksGetterByPath(t *testing.T) {
	entry := referenceAnnotation(t, testKEK, []byte("fixed-iv-12b"), testPrivopts, "kbs://kbs.example:8080/default/image_key/nginx")
	var asked []resource.Path
	u := NewUnwrapper(resource.GetterFunc(func(_ context.Context, p resource.Path) ([]byte, error) {
		asked = append(asked, p)
		return bytes.Clone(testKEK), nil
	}))
	got, err := u.Unwrap(context.Background(), entry)
	if err != nil || !bytes.Equal(got, testPrivopts) {
		t.Fatalf("Unwrap = %q, %v", got, err)
	}
	if want := (resource.Path{Repo: "default", Type: "image_key", Tag: "nginx"}); len(asked) != 1 || asked[0] != want {
		t.Fatalf("getter asked for %v, want [%v]", asked, want)
	}
	// A nil KeyResolver is no resolver at all.
	var none KeyResolver
	if _, err := NewUnwrapper(none).Unwrap(context.Background(), entry); !errors.Is(err, spec.ErrNoKey) {
		t.Fatalf("nil resolver: %v, want ErrNoKey", err)
	}
}

// NewWrapperFor writes the parsed path's kid, the same as NewWrapper with
// that kid, and refuses an invalid path.
func TestNewWrapperFor(t *testing.T) {
	w, err := NewWrapperFor(testKEK, resource.Path{Repo: "default", Type: "image_key", Tag: "nginx"})
	if err != nil {
		t.Fatal(err)
	}
	entry, err := w.Wrap(context.Background(), testPrivopts)
	if err != nil {
		t.Fatal(err)
	}
	if kid, err := Describe(entry); err != nil || kid != testKID {
		t.Fatalf("kid %q, %v; want %s", kid, err, testKID)
	}
	if got, err := NewUnwrapper(resolverFor(testKID, testKEK, nil)).Unwrap(context.Background(), entry); err != nil || !bytes.Equal(got, testPrivopts) {
		t.Fatalf("Unwrap = %q, %v", got, err)
	}
	if _, err := NewWrapperFor(testKEK, resource.Path{Repo: "..", Type: "a", Tag: "b"}); !errors.Is(err, spec.ErrUnsupported) {
		t.Fatalf("invalid path: %v, want ErrUnsupported", err)
	}
}
