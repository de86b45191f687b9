// Package pkcs11 is ocicrypt's pkcs11 key-wrapping scheme: the layer
// options RSA-OAEP encrypted for each recipient, all recipients in one JSON
// object under org.opencontainers.image.enc.keys.pkcs11, and opened by a
// private key that never leaves its PKCS#11 token (HSM, smart card,
// SoftHSM).
//
// Recipients are RSA public keys (encrypted in software) or key files
// naming a public key object on a token (encrypted by the token). Private
// keys are key files: YAML holding an RFC 7512 pkcs11: URI and the module's
// environment, as ocicrypt reads them:
//
//	pkcs11:
//	  uri: pkcs11:token=coffer;object=k1?module-name=softhsm2&pin-value=1234
//	module:
//	  env:
//	    SOFTHSM2_CONF: /etc/softhsm/softhsm2.conf
//
// The same keys sign too (Signer: Ed25519 or ECDSA, a crypto.Signer), for
// the broker's admin and token-signing keys; KeyFromURI takes a pkcs11: URI
// given directly.
//
// A module is loaded only from Config's allowed paths, ocicrypt's rule.
// Talking to a token needs cgo (token_cgo.go); without it the key-file and
// blob parsers and software wrapping still work and token operations fail
// with an error wrapping spec.ErrUnsupported.
package pkcs11

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	pkcs11uri "github.com/stefanberger/go-pkcs11uri"
	"go.yaml.in/yaml/v3"

	"github.com/coffer-dev/coffer/internal/bounded"
	"github.com/coffer-dev/coffer/spec"
)

// Scheme is the annotation suffix (org.opencontainers.image.enc.keys.pkcs11).
const Scheme = "pkcs11"

// Bounds on what is read before it is parsed.
const (
	// MaxKeyFile bounds a key file (a few hundred bytes in practice).
	MaxKeyFile = 64 << 10
	// MaxURI bounds a pkcs11: URI.
	MaxURI = 4 << 10
	maxEnv = 64   // module env entries
	maxPIN = 1024 // bytes of a pin-source file
)

// Key is a private (or, as a recipient, public) key object on a token,
// parsed from a key file. It holds the URI (PIN included) and the module's
// environment; String never shows the PIN.
type Key struct {
	uri *pkcs11uri.Pkcs11URI
	env map[string]string
}

// IsKeyFile reports whether data looks like a pkcs11 key file (a YAML
// mapping with a pkcs11: section) rather than a PEM, DER or JWK key. It
// does not parse: ParseKeyFile does, with bounds.
func IsKeyFile(data []byte) bool {
	t := bytes.TrimLeft(data, " \t\r\n")
	if len(t) == 0 || t[0] == '{' || t[0] == '-' && bytes.HasPrefix(t, []byte("-----BEGIN")) {
		return false
	}
	for line := range bytes.Lines(data) {
		if bytes.HasPrefix(line, []byte("pkcs11:")) {
			return true
		}
	}
	return false
}

type keyFile struct {
	PKCS11 struct {
		URI string `yaml:"uri"`
	} `yaml:"pkcs11"`
	Module struct {
		Env map[string]string `yaml:"env"`
	} `yaml:"module"`
}

// ParseKeyFile parses a pkcs11 key file (ocicrypt's YAML: pkcs11.uri and
// module.env). It is bounded (MaxKeyFile, MaxURI, 64 env entries) and
// touches no token. Errors never show the URI's PIN.
func ParseKeyFile(data []byte) (*Key, error) {
	if len(data) > MaxKeyFile {
		return nil, fmt.Errorf("pkcs11 key file is %d bytes, more than %d", len(data), MaxKeyFile)
	}
	var kf keyFile
	if err := yaml.Unmarshal(data, &kf); err != nil {
		return nil, fmt.Errorf("pkcs11 key file: %s", strings.ReplaceAll(yamlError(err), "\n", " "))
	}
	if kf.PKCS11.URI == "" {
		return nil, fmt.Errorf("pkcs11 key file: no pkcs11.uri")
	}
	if len(kf.Module.Env) > maxEnv {
		return nil, fmt.Errorf("pkcs11 key file: %d module.env entries, more than %d", len(kf.Module.Env), maxEnv)
	}
	for k, v := range kf.Module.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) || len(k)+len(v) > MaxURI {
			return nil, fmt.Errorf("pkcs11 key file: invalid module.env entry %.64q", k)
		}
	}
	u, err := ParseURI(kf.PKCS11.URI)
	if err != nil {
		return nil, err
	}
	return &Key{uri: u, env: kf.Module.Env}, nil
}

// yamlError keeps a YAML error's position and drops any quoted input (a
// PIN could be in it).
func yamlError(err error) string {
	s := err.Error()
	if i := strings.IndexAny(s, "`\""); i >= 0 {
		s = s[:i] + "…"
	}
	return s
}

// ParseURI parses an RFC 7512 pkcs11: URI (at most MaxURI bytes), which
// must name an object (object= or id=) and a token (token= or slot-id=).
func ParseURI(s string) (*pkcs11uri.Pkcs11URI, error) {
	if len(s) > MaxURI {
		return nil, fmt.Errorf("pkcs11 URI is %d bytes, more than %d", len(s), MaxURI)
	}
	u := pkcs11uri.New()
	if err := u.Parse(s); err != nil {
		// The library's messages quote no attribute values.
		return nil, fmt.Errorf("pkcs11 URI: %w", err)
	}
	_, hasObj := u.GetPathAttribute("object", false)
	_, hasID := u.GetPathAttribute("id", false)
	if !hasObj && !hasID {
		return nil, fmt.Errorf("pkcs11 URI %s names no object (object= or id=)", redact(u))
	}
	_, hasTok := u.GetPathAttribute("token", false)
	_, hasSlot := u.GetPathAttribute("slot-id", false)
	if !hasTok && !hasSlot {
		return nil, fmt.Errorf("pkcs11 URI %s names no token (token= or slot-id=)", redact(u))
	}
	_, hasPath := u.GetQueryAttribute("module-path", false)
	_, hasName := u.GetQueryAttribute("module-name", false)
	if !hasPath && !hasName {
		return nil, fmt.Errorf("pkcs11 URI %s names no module (module-path= or module-name=)", redact(u))
	}
	return u, nil
}

// String is the key's URI without its query (no PIN, no module).
func (k *Key) String() string { return redact(k.uri) }

// redact formats the path attributes of u only, in a fixed order.
func redact(u *pkcs11uri.Pkcs11URI) string {
	var parts []string
	for _, a := range []string{"token", "slot-id", "serial", "manufacturer", "model", "object", "id", "type"} {
		if v, ok := u.GetPathAttribute(a, true); ok {
			parts = append(parts, a+"="+v)
		}
	}
	return "pkcs11:" + strings.Join(parts, ";")
}

// object names the URI's object for messages: object="k1" id=%01.
func (k *Key) object() string {
	var parts []string
	if v, ok := k.uri.GetPathAttribute("object", false); ok {
		parts = append(parts, fmt.Sprintf("object=%q", v))
	}
	if v, ok := k.uri.GetPathAttribute("id", true); ok {
		parts = append(parts, "id="+v)
	}
	return strings.Join(parts, " ")
}

// token names the URI's token for messages: "coffer" or slot 3.
func (k *Key) token() string {
	if v, ok := k.uri.GetPathAttribute("token", false); ok {
		return fmt.Sprintf("%q", v)
	}
	v, _ := k.uri.GetPathAttribute("slot-id", false)
	return "in slot " + v
}

// pin returns the URI's PIN (pin-value, or the first line of the absolute
// file pin-source names, at most 1 KiB) and whether it has one.
func (k *Key) pin() (string, bool, error) {
	if v, ok := k.uri.GetQueryAttribute("pin-value", false); ok {
		return v, true, nil
	}
	src, ok := k.uri.GetQueryAttribute("pin-source", false)
	if !ok {
		return "", false, nil
	}
	p := strings.TrimPrefix(src, "file:")
	p = strings.TrimPrefix(p, "//")
	if !filepath.IsAbs(p) {
		return "", false, fmt.Errorf("pkcs11: key %s: pin-source %q is not an absolute file path", k, src)
	}
	f, err := os.Open(p)
	if err != nil {
		return "", false, fmt.Errorf("pkcs11: key %s: pin-source: %w", k, err)
	}
	defer f.Close()
	b := make([]byte, maxPIN+1)
	n, _ := f.Read(b)
	defer clear(b)
	if n > maxPIN {
		return "", false, fmt.Errorf("pkcs11: key %s: pin-source %s holds more than %d bytes", k, p, maxPIN)
	}
	return strings.TrimRight(string(b[:n]), "\r\n"), true, nil
}

// Config says where modules are searched (module-name=) and which may be
// loaded at all, as ocicrypt's config file's pkcs11: section does. A
// module outside AllowedModulePaths is refused; the zero Config allows
// none. An allowed path ending in "/" allows the files directly in it.
type Config struct {
	ModuleDirectories  []string `yaml:"module-directories,omitempty"`
	AllowedModulePaths []string `yaml:"allowed-module-paths,omitempty"`
}

// DefaultModuleDirectories are ocicrypt's defaults across distributions
// (OCICRYPT_CONFIG=internal searches and allows them).
func DefaultModuleDirectories() []string {
	dirs := []string{"/usr/lib64/pkcs11/", "/usr/lib/pkcs11/", "/usr/local/lib/pkcs11/", "/usr/lib/softhsm/"}
	if multiarch != "" {
		dirs = append(dirs, "/usr/lib/"+multiarch+"/")
	}
	return dirs
}

// AllowDir adds dir (searched, and its files allowed) to c.
func (c *Config) AllowDir(dir string) {
	d := strings.TrimRight(filepath.Clean(dir), "/") + "/"
	if !slices.Contains(c.ModuleDirectories, d) {
		c.ModuleDirectories = append(c.ModuleDirectories, d)
	}
	if !slices.Contains(c.AllowedModulePaths, d) {
		c.AllowedModulePaths = append(c.AllowedModulePaths, d)
	}
}

// ParseConfig parses ocicrypt's config file (OCICRYPT_CONFIG): YAML with a
// pkcs11: section holding module-directories and allowed-module-paths.
func ParseConfig(data []byte) (Config, error) {
	if len(data) > MaxKeyFile {
		return Config{}, fmt.Errorf("ocicrypt config is %d bytes, more than %d", len(data), MaxKeyFile)
	}
	var f struct {
		PKCS11 Config `yaml:"pkcs11"`
	}
	if err := yaml.Unmarshal(data, &f); err != nil {
		return Config{}, fmt.Errorf("ocicrypt config: %s", yamlError(err))
	}
	for _, p := range slices.Concat(f.PKCS11.ModuleDirectories, f.PKCS11.AllowedModulePaths) {
		if !filepath.IsAbs(p) {
			return Config{}, fmt.Errorf("ocicrypt config: pkcs11 module path %q is not absolute", p)
		}
	}
	return f.PKCS11, nil
}

// LoadConfig finds the pkcs11 config the way ocicrypt does, given the
// environment (os.Getenv; the library reads none itself):
// OCICRYPT_CONFIG=internal (ocicrypt's default directories, searched and
// allowed), the file OCICRYPT_CONFIG names, then
// $XDG_CONFIG_HOME/ocicrypt.conf, ~/.config/ocicrypt.conf and
// /etc/ocicrypt.conf. None found is the zero Config (no module allowed).
func LoadConfig(getenv func(string) string) (Config, error) {
	var files []string
	switch v := getenv("OCICRYPT_CONFIG"); v {
	case "internal":
		d := DefaultModuleDirectories()
		return Config{ModuleDirectories: d, AllowedModulePaths: slices.Clone(d)}, nil
	case "":
	default:
		files = append(files, v)
	}
	if v := getenv("XDG_CONFIG_HOME"); v != "" {
		files = append(files, filepath.Join(v, "ocicrypt.conf"))
	}
	if v := getenv("HOME"); v != "" {
		files = append(files, filepath.Join(v, ".config", "ocicrypt.conf"))
	}
	files = append(files, "/etc/ocicrypt.conf")
	for _, name := range files {
		data, err := bounded.ReadFile(name, MaxKeyFile)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return Config{}, err
		}
		c, err := ParseConfig(data)
		if err != nil {
			return Config{}, fmt.Errorf("%s: %w", name, err)
		}
		return c, nil
	}
	return Config{}, nil
}

// module resolves the key's module (module-path=, or module-name= in the
// config's directories) and checks it against the allowed paths, as
// ocicrypt does.
func (k *Key) module(c Config) (string, error) {
	u := *k.uri
	u.SetModuleDirectories(c.ModuleDirectories)
	u.SetAllowedModulePaths(c.AllowedModulePaths)
	m, err := u.GetModule()
	if err != nil {
		if strings.Contains(err.Error(), "not allowed") {
			return "", fmt.Errorf("pkcs11: key %s: %v (allow it in OCICRYPT_CONFIG's pkcs11: allowed-module-paths, or with --pkcs11-module-dir): %w",
				k, err, spec.ErrPolicyDenied)
		}
		where := "no module directories: set OCICRYPT_CONFIG's pkcs11: module-directories or --pkcs11-module-dir"
		if len(c.ModuleDirectories) > 0 {
			where = "searched " + strings.Join(c.ModuleDirectories, ", ")
		}
		if _, ok := k.uri.GetQueryAttribute("module-path", false); ok {
			where = "module-path"
		}
		return "", fmt.Errorf("pkcs11: key %s: %v (%s): %w", k, err, where, spec.ErrNotFound)
	}
	return m, nil
}
