package evidence

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"

	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/tpm"
	"github.com/coffer-dev/coffer/tpm/tpmtest"
)

func TestTPMAttester(t *testing.T) {
	if _, err := ForTee("tpm", WithTPM("http://127.0.0.1:2321")); !errors.Is(err, spec.ErrUnsupported) {
		t.Errorf("ForTee(tpm) with an http address: %v", err)
	}
	if a, err := ForTee("tpm"); err != nil || a.Tee() != "tpm" || a.(*TPM).addr != "" {
		t.Errorf("ForTee(tpm) = %v, %v; want the default TPM", a, err)
	}
	sw := tpmtest.StartSwtpm(t)
	a, err := ForTee("tpm", WithTPM(sw.Addr))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := a.Evidence(t.Context(), make([]byte, 48))
	if err != nil {
		t.Fatal(err)
	}
	// CoCo's shape, field for field.
	var ev struct {
		AKPublic string `json:"ak_public"`
		Quote    struct {
			Signature, Message string
			PCRs               []string
		} `json:"tpm_quote"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ev); err != nil || len(ev.Quote.PCRs) != 24 || ev.Quote.Signature == "" || ev.Quote.Message == "" {
		t.Fatalf("evidence %s: %v", raw, err)
	}
	tp, err := tpm.Open(t.Context(), sw.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	ak, err := tp.AKPublic(t.Context())
	if err != nil || ev.AKPublic != base64.StdEncoding.EncodeToString(ak) {
		t.Errorf("ak_public is not the TPM's AK (%v)", err)
	}
}
