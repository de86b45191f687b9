// Package kbsfiles reads the files a broker configuration names (keys,
// certificates, policies, the store URL file), for the programs that
// start a broker from a server.Config: coffer kbs serve and the demo.
// kbs/server takes their contents as values (server.Files) and reads none
// of them.
package kbsfiles

import (
	"fmt"
	"os"

	"github.com/coffer-dev/coffer/kbs/server"
	"github.com/coffer-dev/coffer/keywrap/pkcs11"
)

// LoadConfig reads the broker configuration file at path
// (server.ParseConfig parses it).
func LoadConfig(path string) (server.Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return server.DefaultConfig(), fmt.Errorf("reading kbs config: %w", err)
	}
	return server.ParseConfig(path, raw)
}

// Option configures Read.
type Option func(*options)

type options struct{ pkcs11 pkcs11.Config }

// WithPKCS11 is the module policy for a token_key held in a PKCS#11
// token (ocicrypt's pkcs11 config; the caller reads it). Default: the zero
// Config, which allows no module.
func WithPKCS11(c pkcs11.Config) Option { return func(o *options) { o.pkcs11 = c } }

// Read returns the contents of every file c names. A token_key that is
// a pkcs11: URI, or a file holding a pkcs11 key file, is opened as a
// signer on its token instead (Files.TokenSigner; the key stays there).
func Read(c server.Config, opts ...Option) (server.Files, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	var f server.Files
	read := func(what, name string) ([]byte, error) {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", what, err)
		}
		return b, nil
	}
	if c.StoreURLFile != "" {
		b, err := read("store URL", c.StoreURLFile)
		if err != nil {
			return f, err
		}
		f.StoreURL = string(b)
		if f.StoreURL == "" {
			f.StoreURL = " " // named and read, but empty: Options says what is wrong
		}
	}
	for _, name := range c.AdminPublicKeys {
		b, err := read("admin public key", name)
		if err != nil {
			return f, err
		}
		f.AdminPublicKeys = append(f.AdminPublicKeys, b)
	}
	var err error
	if c.TokenKey != "" {
		k, data, err := pkcs11.LoadKey(c.TokenKey, 1<<20)
		switch {
		case err != nil: // names the file, or the URI without its query
			return f, fmt.Errorf("reading token key: %w", err)
		case k == nil:
			f.TokenKey = data
		default:
			if f.TokenSigner, err = pkcs11.NewSigner(o.pkcs11, k); err != nil {
				return f, fmt.Errorf("token key: %w", err)
			}
		}
	}
	if c.TokenCert != "" {
		if f.TokenCert, err = read("token certificate", c.TokenCert); err != nil {
			return f, err
		}
	}
	for _, name := range c.TPMEKCA {
		b, err := read("TPM EK CA", name)
		if err != nil {
			return f, err
		}
		f.TPMEKCA = append(f.TPMEKCA, b)
	}
	for _, name := range c.TrustedTokenCerts {
		b, err := read("trusted token certificates", name)
		if err != nil {
			return f, err
		}
		f.TrustedTokenCerts = append(f.TrustedTokenCerts, b)
	}
	if c.ResourcePolicyFile != "" {
		if f.ResourcePolicy, err = read("resource policy", c.ResourcePolicyFile); err != nil {
			return f, err
		}
	}
	if c.AttestationPolicyFile != "" {
		if f.AttestationPolicy, err = read("attestation policy", c.AttestationPolicyFile); err != nil {
			return f, err
		}
	}
	return f, nil
}
