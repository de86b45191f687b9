package wpm_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/secl/flavor"
	"github.com/coffer-dev/coffer/spec"
)

const testKeyURL = "http://127.0.0.1:8080/kbs/v1/keys/2b7a3e1c-6a2e-4b8e-9c1f-0d4f5e6a7b8c/transfer"

// SecL's annotation packet: sealed with the broker key, opened with it only.
func TestAnnotation(t *testing.T) {
	t.Parallel()
	kek, other := make([]byte, 32), make([]byte, 32)
	rand.Read(kek)
	rand.Read(other)
	opts := []byte(`{"symkey":"x","digest":"sha256:00","cipheroptions":{"nonce":"y"}}`)
	entry, err := flavor.SealAnnotation(kek, testKeyURL, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"key_url":"` + testKeyURL + `"`, `"wrap_type":"AES"`, `"wrapped_key":"`} {
		if !strings.Contains(string(entry), field) {
			t.Errorf("annotation %s lacks %s", entry, field)
		}
	}
	p, err := flavor.ParseAnnotation(entry)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := p.Open(kek); err != nil || !bytes.Equal(got, opts) {
		t.Errorf("Open = %q, %v; want the options", got, err)
	}
	if _, err := p.Open(other); !errors.Is(err, spec.ErrIntegrity) {
		t.Errorf("Open with another key: %v, want ErrIntegrity", err)
	}
	for _, bad := range []string{
		strings.Replace(string(entry), `"AES"`, `"RSA"`, 1),
		strings.Replace(string(entry), "/transfer", "/x", 1),
		`{`,
		strings.Repeat(" ", flavor.MaxAnnotation+1),
	} {
		if _, err := flavor.ParseAnnotation([]byte(bad)); !errors.Is(err, spec.ErrUnsupported) {
			t.Errorf("ParseAnnotation(%.40q) = %v, want ErrUnsupported", bad, err)
		}
	}
}

// FuzzAnnotation: an annotation from a registry opens with the broker key
// only if it is the one sealed with it, and then yields exactly its options.
func FuzzAnnotation(f *testing.F) {
	kek := make([]byte, 32)
	rand.Read(kek)
	opts := []byte(`{"symkey":"fuzz"}`)
	entry, _ := flavor.SealAnnotation(kek, testKeyURL, opts)
	f.Add(entry)
	f.Add([]byte(`{"key_url":"` + testKeyURL + `","wrapped_key":"e30=","wrap_type":"AES"}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		p, err := flavor.ParseAnnotation(in)
		if err != nil {
			return
		}
		if _, _, err := flavor.ParseKeyURL(p.KeyURL); err != nil {
			t.Fatalf("accepted a bad key URL %q", p.KeyURL)
		}
		if got, err := p.Open(kek); err == nil && !bytes.Equal(got, opts) {
			t.Fatalf("opened to %q, not the sealed options", got)
		}
	})
}
