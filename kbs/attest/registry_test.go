package attest

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/spec"
)

type fixedVerifier struct{}

func (fixedVerifier) Verify(context.Context, Evidence) (Claims, error) {
	return Claims{"example": true}, nil
}

// A new TEE is one Register line: the broker's verifiers and the offline
// check both find it; development TEEs need AllowSample.
func TestTableAddsATEE(t *testing.T) {
	if _, ok := lookupTEE("example-tee"); !ok { // (-count > 1 runs this again)
		Register(TEE{Name: "example-tee", New: func(Config) Verifier { return fixedVerifier{} },
			Offline: func(context.Context, []byte, offlineOptions, Evidence) (Claims, error) {
				return Claims{"offline": true}, nil
			}})
	}
	v := New(Config{})
	if !v.Supports("example-tee") || v.Supports(protocol.TeeSample) {
		t.Fatalf("New(Config{}) supports example-tee %v, sample %v; want true, false", v.Supports("example-tee"), v.Supports(protocol.TeeSample))
	}
	if !New(Config{AllowSample: true}).Supports(protocol.TeeSample) {
		t.Fatal("AllowSample: no sample verifier")
	}
	c, err := v.Verify(context.Background(), Evidence{Tee: "example-tee", Primary: json.RawMessage(`{}`)})
	if err != nil || c["example"] != true {
		t.Fatalf("Verify = %v, %v", c, err)
	}
	if c, err := VerifyFile(context.Background(), "example-tee", []byte("{}")); err != nil || c["offline"] != true {
		t.Fatalf("VerifyFile = %v, %v", c, err)
	}
	if _, err := VerifyFile(context.Background(), "example-tee", []byte("{}"), WithCert([]byte("x"))); !errors.Is(err, spec.ErrUnsupported) {
		t.Fatalf("a certificate for a TEE that takes none: %v, want ErrUnsupported", err)
	}
	if _, err := VerifyFile(context.Background(), "sample", []byte("{}")); !errors.Is(err, spec.ErrUnsupported) || !strings.Contains(err.Error(), "snp, tdx, tpm and example-tee") {
		t.Fatalf("offline sample: %v, want the table's offline TEEs named", err)
	}
}
