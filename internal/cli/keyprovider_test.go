package cli

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/kbs/kbstest"
	"github.com/coffer-dev/coffer/spec"
)

// aaPacket is CoCo's AnnotationPacket, written here independently of keywrap/aa.
type aaPacket struct {
	KID         string `json:"kid"`
	WrappedData []byte `json:"wrapped_data"`
	IV          []byte `json:"iv"`
	WrapType    string `json:"wrap_type"`
}

func aesGCM(t *testing.T, kek []byte) cipher.AEAD {
	t.Helper()
	blk, err := aes.NewCipher(kek)
	if err != nil {
		t.Fatal(err)
	}
	g, err := cipher.NewGCM(blk)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// sealAA builds an attestation-agent annotation entry by hand.
func sealAA(t *testing.T, kek []byte, kid string, privopts []byte) []byte {
	t.Helper()
	iv := make([]byte, 12)
	rand.Read(iv)
	entry, err := json.Marshal(aaPacket{KID: kid, WrappedData: aesGCM(t, kek).Seal(nil, iv, privopts, nil), IV: iv, WrapType: "A256GCM"})
	if err != nil {
		t.Fatal(err)
	}
	return entry
}

// openAA opens an attestation-agent annotation entry by hand.
func openAA(t *testing.T, kek, entry []byte) (kid string, privopts []byte) {
	t.Helper()
	var p aaPacket
	if err := json.Unmarshal(entry, &p); err != nil {
		t.Fatalf("annotation entry %q: %v", entry, err)
	}
	if p.WrapType != "A256GCM" || len(p.IV) != 12 {
		t.Fatalf("annotation entry %q: wrap_type %q iv %d bytes, want A256GCM and 12", entry, p.WrapType, len(p.IV))
	}
	pt, err := aesGCM(t, kek).Open(nil, p.IV, p.WrappedData, nil)
	if err != nil {
		t.Fatalf("opening wrapped_data: %v", err)
	}
	return p.KID, pt
}

// brokerWithKEK starts a broker holding a fresh 32-byte KEK at path.
func brokerWithKEK(t *testing.T, path string) (*kbstest.Broker, []byte) {
	t.Helper()
	kek := make([]byte, 32)
	rand.Read(kek)
	b := kbstest.New(t)
	b.SetResource(t, path, kek)
	b.AllowAll(t)
	return b, kek
}

const testPrivopts = `{"symkey":"MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MTI=","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","cipheroptions":{"nonce":"MDEyMzQ1Njc4OWFiY2RlZg=="}}`

// runCofferSplit runs coffer with separate stdout and stderr.
func runCofferSplit(t *testing.T, stdin []byte, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := NewRoot()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetIn(bytes.NewReader(stdin))
	root.SetArgs(args)
	err = root.ExecuteContext(context.Background())
	return out.String(), errb.String(), err
}

func unwrapRequest(entry []byte) []byte {
	req, _ := json.Marshal(map[string]any{
		"op":            "keyunwrap",
		"keywrapparams": map[string]any{"ec": nil, "optsdata": nil},
		"keyunwrapparams": map[string]any{
			"dc":         map[string]any{"Parameters": map[string][][]byte{"attestation-agent": {[]byte("Enabled")}}},
			"annotation": entry,
		},
	})
	return req
}

func TestKeyproviderCmdUnwrap(t *testing.T) {
	t.Setenv("COFFER_TEE", "sample") // ocicrypt starts the provider without flags: the TEE comes from the environment
	const kid = "kbs:///default/image_key/app"
	b, kek := brokerWithKEK(t, "default/image_key/app")
	entry := sealAA(t, kek, kid, []byte(testPrivopts))

	out, stderr, err := runCofferSplit(t, unwrapRequest(entry), "keyprovider", "--kbs", b.URL, "--tee", "sample")
	if err != nil {
		t.Fatalf("keyprovider: %v (stderr %q)", err, stderr)
	}
	var resp struct {
		KeyUnwrapResults struct {
			OptsData []byte `json:"optsdata"`
		} `json:"keyunwrapresults"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("response %q: %v", out, err)
	}
	if got := string(resp.KeyUnwrapResults.OptsData); got != testPrivopts {
		t.Errorf("optsdata = %q, want %q", got, testPrivopts)
	}

	// The broker's URL may come from the environment instead.
	t.Setenv("COFFER_KBS_URL", b.URL)
	if out2, _, err := runCofferSplit(t, unwrapRequest(entry), "keyprovider"); err != nil || out2 != out {
		t.Errorf("keyprovider with COFFER_KBS_URL = %q, %v; want %q", out2, err, out)
	}
	t.Setenv("COFFER_KBS_URL", "")

	for _, tc := range []struct {
		name  string
		entry []byte
		deny  bool
		want  error
	}{
		{"wrong KEK", sealAA(t, bytes.Repeat([]byte{7}, 32), kid, []byte(testPrivopts)), false, spec.ErrIntegrity},
		{"missing resource", sealAA(t, kek, "kbs:///default/image_key/other", []byte(testPrivopts)), false, spec.ErrNotFound},
		{"denied", entry, true, spec.ErrPolicyDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.deny {
				b.DenyAll(t)
				defer b.AllowAll(t)
			}
			out, _, err := runCofferSplit(t, unwrapRequest(tc.entry), "keyprovider", "--kbs", b.URL, "--tee", "sample")
			if err == nil || out != "" {
				t.Fatalf("keyprovider = %q, %v; want an error and no output", out, err)
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("error %v, want %v", err, tc.want)
			}
		})
	}

	// Without a broker nothing can be unwrapped.
	if _, _, err := runCofferSplit(t, unwrapRequest(entry), "keyprovider"); !errors.Is(err, spec.ErrNoKey) {
		t.Errorf("keyprovider without --kbs: %v, want ErrNoKey", err)
	}
}

// TestKeyproviderCmdWrap: the encrypt side, as skopeo passes
// provider:attestation-agent:keypath=…::keyid=…::algorithm=A256GCM.
func TestKeyproviderCmdWrap(t *testing.T) {
	kek := make([]byte, 32)
	rand.Read(kek)
	keyFile := filepath.Join(t.TempDir(), "kek")
	if err := os.WriteFile(keyFile, kek, 0o600); err != nil {
		t.Fatal(err)
	}
	const kid = "kbs:///default/image_key/nginx"
	params := "keypath=" + keyFile + "::keyid=" + kid + "::algorithm=A256GCM"
	req, _ := json.Marshal(map[string]any{
		"op": "keywrap",
		"keywrapparams": map[string]any{
			"ec":       map[string]any{"Parameters": map[string][][]byte{"attestation-agent": {[]byte(params)}}, "DecryptConfig": map[string]any{"Parameters": map[string]any{}}},
			"optsdata": []byte(testPrivopts),
		},
		"keyunwrapparams": map[string]any{"dc": nil, "annotation": nil},
	})
	out, stderr, err := runCofferSplit(t, req, "keyprovider")
	if err != nil {
		t.Fatalf("keyprovider keywrap: %v (stderr %q)", err, stderr)
	}
	var resp struct {
		KeyWrapResults struct {
			Annotation []byte `json:"annotation"`
		} `json:"keywrapresults"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("response %q: %v", out, err)
	}
	gotKID, pt := openAA(t, kek, resp.KeyWrapResults.Annotation)
	if gotKID != kid || string(pt) != testPrivopts {
		t.Errorf("wrapped entry = kid %q privopts %q, want %q %q", gotKID, pt, kid, testPrivopts)
	}
	if strings.Contains(out, base64.StdEncoding.EncodeToString(kek)) {
		t.Error("the KEK appears in the response")
	}
}
