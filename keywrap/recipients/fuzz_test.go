package recipients_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/keywrap/recipients"
	"github.com/coffer-dev/coffer/spec"
)

func TestParseRecipientTable(t *testing.T) {
	tests := []struct {
		in   string
		want recipients.Recipient
		err  bool
	}{
		{"jwe:/k/pub.pem", recipients.Recipient{Scheme: "jwe", File: "/k/pub.pem"}, false},
		{"pkcs7:c:with:colons.crt", recipients.Recipient{Scheme: "pkcs7", File: "c:with:colons.crt"}, false},
		{"pgp:alice.asc", recipients.Recipient{Scheme: "pgp", File: "alice.asc"}, false},
		{"provider:attestation-agent:keypath=/k::keyid=kbs:///a/b/c", recipients.Recipient{Scheme: "provider", Provider: "attestation-agent", Params: "keypath=/k::keyid=kbs:///a/b/c"}, false},
		{"provider:mykp", recipients.Recipient{Scheme: "provider", Provider: "mykp"}, false},
		{"provider:", recipients.Recipient{}, true},
		{"jwe:", recipients.Recipient{}, true},
		{"JWE:x", recipients.Recipient{}, true},
		{"x509:x", recipients.Recipient{}, true},
		{"", recipients.Recipient{}, true},
	}
	for _, tc := range tests {
		got, err := recipients.ParseRecipient(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseRecipient(%q) = %+v, %v; want %+v, err %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestParseKeySpecTable(t *testing.T) {
	tests := []struct {
		in         string
		file       string
		src        recipients.PasswordSource
		pw, pwfile string
		fd         int
		provider   string
		params     string
		str        string
		err        bool
	}{
		{in: "k.pem", file: "k.pem", str: "k.pem"},
		{in: "k.pem:pass=a:b=c", file: "k.pem", src: recipients.PasswordLiteral, pw: "a:b=c", str: "k.pem:pass=…"},
		{in: "k.pem:pass=", file: "k.pem", src: recipients.PasswordLiteral, pw: "", str: "k.pem:pass=…"},
		{in: "k.pem:file=/run/pw", file: "k.pem", src: recipients.PasswordFile, pwfile: "/run/pw", str: "k.pem:file=/run/pw"},
		{in: "k.pem:fd=3", file: "k.pem", src: recipients.PasswordFD, fd: 3, str: "k.pem:fd=3"},
		{in: "dir:x/k.pem:pass=p", file: "dir:x/k.pem", src: recipients.PasswordLiteral, pw: "p", str: "dir:x/k.pem:pass=…"},
		{in: "k.pem:other", file: "k.pem:other", str: "k.pem:other"},
		{in: "provider:attestation-agent", provider: "attestation-agent", str: "provider:attestation-agent"},
		{in: "provider:aa:keypath=/k", provider: "aa", params: "keypath=/k", str: "provider:aa"},
		{in: "k.pem:fd=-1", err: true},
		{in: "k.pem:fd=x", err: true},
		{in: ":pass=x", err: true},
		{in: "k.pem:file=", err: true},
		{in: "provider:", err: true},
		{in: "", err: true},
	}
	for _, tc := range tests {
		got, err := recipients.ParseKeySpec(tc.in)
		if tc.err {
			if err == nil {
				t.Errorf("ParseKeySpec(%q): no error", tc.in)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseKeySpec(%q): %v", tc.in, err)
			continue
		}
		if got.File != tc.file || got.Source != tc.src || string(got.Password) != tc.pw || got.PasswordFile != tc.pwfile ||
			got.FD != tc.fd || got.Provider != tc.provider || got.Params != tc.params || got.String() != tc.str {
			t.Errorf("ParseKeySpec(%q) = %+v (%s)", tc.in, got, got)
		}
	}
}

func FuzzParseRecipient(f *testing.F) {
	for _, s := range []string{"jwe:a.pem", "pkcs7:c.crt", "pgp:k.asc", "provider:attestation-agent:keypath=/k::keyid=kbs:///a/b/c", "provider:x", "nope:x", ":", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fuzzbound.Limit(t, fuzzbound.Default)
		r, err := recipients.ParseRecipient(s)
		if err != nil {
			if strings.Contains(err.Error(), "unknown recipient scheme") && !errors.Is(err, spec.ErrUnsupported) {
				t.Fatalf("unknown scheme error does not wrap ErrUnsupported: %v", err)
			}
			return
		}
		switch r.Scheme {
		case "jwe", "pkcs7", "pgp":
			if r.File == "" || r.Scheme+":"+r.File != s {
				t.Fatalf("%q parsed to %+v", s, r)
			}
		case "provider":
			back := "provider:" + r.Provider
			if r.Params != "" || strings.Count(s, ":") > 1 {
				back += ":" + r.Params
			}
			if r.Provider == "" || back != s {
				t.Fatalf("%q parsed to %+v", s, r)
			}
		default:
			t.Fatalf("%q: scheme %q", s, r.Scheme)
		}
	})
}

func FuzzParseKeySpec(f *testing.F) {
	for _, s := range []string{"k.pem", "k.pem:pass=secret", "k.pem:file=/pw", "k.pem:fd=3", "a:b:pass=c:d", "provider:p:x", "k:fd=99999999999999999999", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fuzzbound.Limit(t, fuzzbound.Default)
		ks, err := recipients.ParseKeySpec(s)
		secret := ""
		if i := strings.Index(s, ":pass="); i >= 0 {
			secret = s[i+len(":pass="):]
		}
		if err != nil {
			if len(secret) >= 4 && strings.Contains(err.Error(), secret) {
				t.Fatalf("error %q shows the password", err)
			}
			return
		}
		if ks.Source == recipients.PasswordLiteral && ks.String() != ks.File+":pass=…" {
			t.Fatalf("String() %q: want the file and no password", ks.String())
		}
		if ks.Provider == "" && ks.File == "" {
			t.Fatalf("%q: neither file nor provider", s)
		}
		if ks.FD < 0 {
			t.Fatalf("%q: negative fd", s)
		}
	})
}
