package pkcs11_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/keywrap/pkcs11"
	"github.com/coffer-dev/coffer/spec"
)

func write(t *testing.T, name, data string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// FuzzParseKeyFile: any key file parses or fails within the time bound,
// and neither the key's String nor an error shows its pin-value.
func FuzzParseKeyFile(f *testing.F) {
	f.Add("pkcs11:\n  uri: " + goodURI + "\nmodule:\n  env:\n    SOFTHSM2_CONF: /x\n")
	f.Add("pkcs11:\n  uri: pkcs11:token=a%20b;id=%01%02;slot-id=3?module-name=softhsm2&pin-source=file:///run/pin\n")
	f.Add("pkcs11:\n  uri: pkcs11:;;==?&&\n")
	f.Add("pkcs11: {uri: [1, 2]}\nmodule: {env: {A: B}}\n")
	f.Fuzz(func(t *testing.T, in string) {
		fuzzbound.Limit(t, fuzzbound.Default)
		pkcs11.IsKeyFile([]byte(in))
		k, err := pkcs11.ParseKeyFile([]byte(in))
		if err == nil && strings.Contains(k.String(), "?") {
			t.Fatalf("String() shows the query: %q", k.String())
		}
		if err != nil && strings.Contains(in, "pin-value=s3cret") && strings.Contains(err.Error(), "s3cret") {
			t.Fatalf("error shows the PIN: %v", err)
		}
	})
}

// FuzzUnwrap: any entry is described or refused with a sentinel, and
// unwrapping it (no module allowed: no token is touched) fails with one.
func FuzzUnwrap(f *testing.F) {
	f.Add([]byte(`{"version":0,"recipients":[{"version":0,"blob":"AAAA","hash":"sha256"}]}`))
	f.Add([]byte(`{"recipients":[{"blob":"AAAA"},{"version":1}]}`))
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`[]`))
	k, err := pkcs11.ParseKeyFile([]byte("pkcs11:\n  uri: " + goodURI + "\n"))
	if err != nil {
		f.Fatal(err)
	}
	u, _ := pkcs11.NewUnwrapper(pkcs11.Config{}, k)
	f.Fuzz(func(t *testing.T, entry []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		if _, err := pkcs11.Describe(entry); err != nil && !errors.Is(err, spec.ErrIntegrity) && !errors.Is(err, spec.ErrUnsupported) {
			t.Fatalf("Describe: error without a sentinel: %v", err)
		}
		pt, err := u.Unwrap(context.Background(), entry)
		if err == nil || pt != nil {
			t.Fatalf("opened without a token: %q, %v", pt, err)
		}
		for _, s := range []error{spec.ErrIntegrity, spec.ErrUnsupported, spec.ErrNoKey, spec.ErrPolicyDenied, spec.ErrNotFound} {
			if errors.Is(err, s) {
				return
			}
		}
		t.Fatalf("Unwrap: error without a sentinel: %v", err)
	})
}
