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

// Read returns the contents of every file c names.
func Read(c server.Config) (server.Files, error) {
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
		if f.TokenKey, err = read("token key", c.TokenKey); err != nil {
			return f, err
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
