package pkcs11_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/keywrap/pkcs11"
	"github.com/coffer-dev/coffer/spec"
)

const goodURI = "pkcs11:token=coffer;object=k1;id=%01?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=s3cret"

func TestParseKeyFile(t *testing.T) {
	for _, tc := range []struct {
		name, in, err string
	}{
		{"good", "pkcs11:\n  uri: " + goodURI + "\nmodule:\n  env:\n    SOFTHSM2_CONF: /x.conf\n", ""},
		{"module-name", "pkcs11:\n  uri: pkcs11:token=coffer;object=k1?module-name=softhsm2&pin-source=/run/pin\n", ""},
		{"no uri", "pkcs11:\n  other: 1\n", "no pkcs11.uri"},
		{"not yaml", "pkcs11: [\n", "pkcs11 key file:"},
		{"no object", "pkcs11:\n  uri: pkcs11:token=coffer?module-name=softhsm2&pin-value=s3cret\n", "names no object"},
		{"no token", "pkcs11:\n  uri: pkcs11:object=k1?module-name=softhsm2&pin-value=s3cret\n", "names no token"},
		{"no module", "pkcs11:\n  uri: pkcs11:token=coffer;object=k1?pin-value=s3cret\n", "names no module"},
		{"relative module", "pkcs11:\n  uri: pkcs11:token=coffer;object=k1?module-path=lib.so&pin-value=s3cret\n", "must be absolute"},
		{"pin twice", "pkcs11:\n  uri: pkcs11:token=coffer;object=k1?module-path=/l.so&pin-value=s3cret&pin-source=/p\n", "must not contain pin-source and pin-value"},
		{"long uri", "pkcs11:\n  uri: pkcs11:token=coffer;object=" + strings.Repeat("k", pkcs11.MaxURI) + "\n", "more than 4096"},
		{"big file", "pkcs11:\n  uri: x\n#" + strings.Repeat("x", pkcs11.MaxKeyFile), "more than 65536"},
		{"bad env", "pkcs11:\n  uri: " + goodURI + "\nmodule:\n  env:\n    \"A=B\": x\n", "invalid module.env"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !pkcs11.IsKeyFile([]byte(tc.in)) {
				t.Fatal("IsKeyFile: false")
			}
			k, err := pkcs11.ParseKeyFile([]byte(tc.in))
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				if s := k.String(); strings.Contains(s, "s3cret") || !strings.HasPrefix(s, "pkcs11:token=coffer;object=k1") {
					t.Errorf("String() = %q", s)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("got %v, want an error containing %q", err, tc.err)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error shows the PIN: %v", err)
			}
		})
	}
	for _, not := range []string{"-----BEGIN PUBLIC KEY-----\npkcs11:\n", `{"kty":"RSA"}`, "", "uri: pkcs11:x"} {
		if pkcs11.IsKeyFile([]byte(not)) {
			t.Errorf("IsKeyFile(%q) = true", not)
		}
	}
}

func TestConfig(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "ocicrypt.conf")
	write(t, conf, "pkcs11:\n  module-directories:\n  - /usr/lib/softhsm/\n  allowed-module-paths:\n  - /usr/lib/softhsm/libsofthsm2.so\n")
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	c, err := pkcs11.LoadConfig(env(map[string]string{"OCICRYPT_CONFIG": conf}))
	if err != nil || len(c.ModuleDirectories) != 1 || c.AllowedModulePaths[0] != "/usr/lib/softhsm/libsofthsm2.so" {
		t.Fatalf("OCICRYPT_CONFIG file: %+v, %v", c, err)
	}
	c, err = pkcs11.LoadConfig(env(map[string]string{"XDG_CONFIG_HOME": dir, "HOME": "/nonexistent"}))
	if err != nil || len(c.AllowedModulePaths) != 1 {
		t.Fatalf("XDG_CONFIG_HOME: %+v, %v", c, err)
	}
	c, err = pkcs11.LoadConfig(env(map[string]string{"OCICRYPT_CONFIG": "internal"}))
	if err != nil || len(c.AllowedModulePaths) < 4 {
		t.Fatalf("internal: %+v, %v", c, err)
	}
	write(t, conf, "pkcs11:\n  allowed-module-paths:\n  - lib/\n")
	if _, err := pkcs11.LoadConfig(env(map[string]string{"OCICRYPT_CONFIG": conf})); err == nil || !strings.Contains(err.Error(), "not absolute") {
		t.Fatalf("relative path: %v", err)
	}
	c = pkcs11.Config{}
	c.AllowDir("/opt/hsm")
	if c.ModuleDirectories[0] != "/opt/hsm/" || c.AllowedModulePaths[0] != "/opt/hsm/" {
		t.Errorf("AllowDir: %+v", c)
	}
}

func TestEntryErrors(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want error
	}{
		{`x`, spec.ErrIntegrity},
		{`{"version":1,"recipients":[{"blob":"AA=="}]}`, spec.ErrUnsupported},
		{`{"version":0,"recipients":[]}`, spec.ErrIntegrity},
		{`{"recipients":[{"blob":"!!"}]}`, spec.ErrIntegrity},
		{`{"recipients":[{"blob":"` + strings.Repeat("A", 4000) + `"}]}`, spec.ErrIntegrity},
	} {
		if _, err := pkcs11.Describe([]byte(tc.in)); !errors.Is(err, tc.want) {
			t.Errorf("Describe(%.40q): got %v, want %v", tc.in, err, tc.want)
		}
	}
	lines, err := pkcs11.Describe([]byte(`{"recipients":[{"blob":"AAAA"},{"version":1,"blob":"AAAA"},{"blob":"AAAA","hash":"md5"}]}`))
	if err != nil || strings.Join(lines, "|") != "pkcs11 RSA-OAEP-SHA1 24-bit|pkcs11 (2 recipients of an unknown version or hash)" {
		t.Errorf("Describe: %q, %v", lines, err)
	}
}
