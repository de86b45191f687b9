// Package recipients turns the CLI's --recipient and --key strings into key
// wrappers and unwrappers, and describes wrapped entries for inspect.
//
// Wrappers and unwrappers come in a fixed scheme order: jwe, pkcs7, pgp, then
// key providers in the order given. All recipients of one scheme share one
// wrapper, so one annotation entry covers them all (one JWE object for every
// jwe recipient, as ocicrypt writes it).
package recipients

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"

	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/keywrap/jwe"
	"github.com/coffer-dev/coffer/keywrap/keys"
	"github.com/coffer-dev/coffer/keywrap/pgp"
	"github.com/coffer-dev/coffer/keywrap/pkcs7"
	"github.com/coffer-dev/coffer/spec"
)

// Env carries what the CLI reads from its environment; library code reads
// no environment variables itself.
type Env struct {
	// KeyProviderConfig is the value of OCICRYPT_KEYPROVIDER_CONFIG: the path
	// of the keyprovider config file. "" means none.
	KeyProviderConfig string
	// Stdin serves "FILE:fd=0" passwords when set; otherwise fd 0 of the
	// process is read.
	Stdin io.Reader
}

// maxPassword bounds a password read from a file or descriptor.
const maxPassword = 64 << 10

// ParseRecipients parses --recipient strings ("jwe:FILE", "pkcs7:FILE",
// "pgp:FILE", "provider:NAME[:PARAMS]") and returns one Wrapper per scheme in
// the order jwe, pkcs7, pgp, then one per provider recipient in the order
// given. An unknown scheme is an error wrapping spec.ErrUnsupported naming
// the accepted ones. Duplicate keys are wrapped for once.
func ParseRecipients(ctx context.Context, specs []string, env Env) ([]keywrap.Wrapper, error) {
	var (
		jweRecips []jwe.Recipient
		certs     []*x509.Certificate
		pgpTo     openpgp.EntityList
		providers []keywrap.Wrapper
		prov      providerEnv
	)
	for _, s := range specs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r, err := ParseRecipient(s)
		if err != nil {
			return nil, err
		}
		switch r.Scheme {
		case SchemeJWE:
			pk, err := keys.LoadPublicKey(r.File)
			if err != nil {
				return nil, fmt.Errorf("recipient jwe:%s: %w", r.File, err)
			}
			rec := jwe.Recipient{Key: pk.Key, Algorithm: pk.Algorithm, KeyID: pk.KeyID}
			if !containsJWE(jweRecips, rec) {
				jweRecips = append(jweRecips, rec)
			}
		case SchemePKCS7:
			cs, err := keys.LoadCertificates(r.File)
			if err != nil {
				return nil, fmt.Errorf("recipient pkcs7:%s: %w", r.File, err)
			}
			for _, c := range cs {
				if !containsCert(certs, c) {
					certs = append(certs, c)
				}
			}
		case SchemePGP:
			el, err := keys.LoadOpenPGP(r.File)
			if err != nil {
				if errors.Is(err, spec.ErrNotFound) {
					return nil, fmt.Errorf("recipient pgp:%s: coffer takes an OpenPGP public key file (gpg --export --armor ID > key.asc), not a keyring name: %w",
						r.File, spec.ErrNotFound)
				}
				return nil, fmt.Errorf("recipient pgp:%s: %w", r.File, err)
			}
			for _, e := range el {
				if !containsEntity(pgpTo, e) {
					pgpTo = append(pgpTo, e)
				}
			}
		case SchemeProvider:
			w, err := prov.wrapper(r.Provider, r.Params, env)
			if err != nil {
				return nil, fmt.Errorf("recipient provider:%s: %w", r.Provider, err)
			}
			providers = append(providers, w)
		}
	}
	var out []keywrap.Wrapper
	if len(jweRecips) > 0 {
		w, err := jwe.NewWrapper(jweRecips)
		if err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	if len(certs) > 0 {
		w, err := pkcs7.NewWrapper(certs)
		if err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	if len(pgpTo) > 0 {
		w, err := pgp.NewWrapper(pgpTo)
		if err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	return append(out, providers...), nil
}

func containsJWE(rs []jwe.Recipient, r jwe.Recipient) bool {
	for _, x := range rs {
		if x.Algorithm == r.Algorithm && x.KeyID == r.KeyID && publicEqual(x.Key, r.Key) {
			return true
		}
	}
	return false
}

func publicEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

func containsCert(cs []*x509.Certificate, c *x509.Certificate) bool {
	for _, x := range cs {
		if x.Equal(c) {
			return true
		}
	}
	return false
}

func containsEntity(el openpgp.EntityList, e *openpgp.Entity) bool {
	for _, x := range el {
		if x.PrimaryKey.Fingerprint != nil && bytes.Equal(x.PrimaryKey.Fingerprint, e.PrimaryKey.Fingerprint) {
			return true
		}
	}
	return false
}

// ParseKeys parses --key strings ("FILE", "FILE:pass=PASSWORD",
// "FILE:file=PASSFILE", "FILE:fd=N", "provider:NAME[:PARAMS]") and returns
// unwrappers in the order jwe, pkcs7, pgp, then providers in the order given.
// One key file may serve several schemes (an RSA key opens jwe and pkcs7
// entries); certificate files supply the certificates pkcs7 needs. A key
// file that serves no scheme, a wrong or missing password, or only
// certificates without any private key is an error.
func ParseKeys(ctx context.Context, specs []string, env Env) ([]keywrap.Unwrapper, error) {
	var (
		ms        []*keys.Material
		providers []keywrap.Unwrapper
		prov      providerEnv
	)
	for _, s := range specs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ks, err := ParseKeySpec(s)
		if err != nil {
			return nil, err
		}
		if ks.Provider != "" {
			u, err := prov.unwrapper(ks.Provider, ks.Params, env)
			if err != nil {
				return nil, fmt.Errorf("key provider:%s: %w", ks.Provider, err)
			}
			providers = append(providers, u)
			continue
		}
		m, err := loadKey(ks, env)
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	out, err := Unwrappers(ms, providers...)
	if err != nil {
		return nil, err
	}
	if len(out) == 0 && len(specs) > 0 {
		return nil, fmt.Errorf("no private key among the --key arguments (certificates alone cannot decrypt): %w", spec.ErrNoKey)
	}
	return out, nil
}

// Unwrappers turns parsed key material into unwrappers in the order jwe,
// pkcs7, pgp, then the given providers. One key may serve several schemes
// (an RSA key opens jwe and pkcs7 entries); certificates supply what pkcs7
// needs. A private key that opens no scheme is an error.
func Unwrappers(ms []*keys.Material, providers ...keywrap.Unwrapper) ([]keywrap.Unwrapper, error) {
	var (
		jweKeys, pkcs7Keys []crypto.PrivateKey
		certs              []*x509.Certificate
		pgpKeys            openpgp.EntityList
	)
	for _, m := range ms {
		if m.Private != nil {
			used := false
			if jwe.CanUse(m.Private) {
				jweKeys = append(jweKeys, m.Private)
				used = true
			}
			if pkcs7.CanUse(m.Private) {
				pkcs7Keys = append(pkcs7Keys, m.Private)
				used = true
			}
			if !used {
				return nil, fmt.Errorf("key %s: %T keys open no coffer scheme (jwe and pkcs7 need RSA or EC P-256/384/521 keys): %w",
					m.Name, m.Private, spec.ErrUnsupported)
			}
		}
		certs = append(certs, m.Certs...)
		pgpKeys = append(pgpKeys, m.OpenPGP...)
	}
	var out []keywrap.Unwrapper
	if len(jweKeys) > 0 {
		u, err := jwe.NewUnwrapper(jweKeys...)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	if len(pkcs7Keys) > 0 {
		u, err := pkcs7.NewUnwrapper(pkcs7Keys, certs)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	if len(pgpKeys) > 0 {
		u, err := pgp.NewUnwrapper(pgpKeys)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return append(out, providers...), nil
}

// loadKey reads the key file and its password as the spec says. Compatible
// with ocicrypt: a bare "FILE:PASSWORD" works when FILE exists and the whole
// string does not; a password read from a file or descriptor that does not
// fit is retried without its trailing newline.
func loadKey(ks KeySpec, env Env) (*keys.Material, error) {
	if ks.Source == PasswordNone {
		if _, err := os.Stat(ks.File); errors.Is(err, os.ErrNotExist) {
			if file, pw, ok := strings.Cut(ks.File, ":"); ok && file != "" {
				// Maybe FILE:PASSWORD: never echo the part after ':'.
				if st, err := os.Stat(file); err != nil || !st.Mode().IsRegular() {
					return nil, fmt.Errorf("key file %s: %w", file, spec.ErrNotFound)
				}
				ks = KeySpec{File: file, Source: PasswordLiteral, Password: []byte(pw)}
			}
		}
	}
	pw, err := readPassword(ks, env)
	if err != nil {
		return nil, err
	}
	defer clear(pw)
	data, err := keys.ReadFile(ks.File)
	if err != nil {
		return nil, err
	}
	defer clear(data)
	m, err := keys.ParseMaterial(ks.File, data, pw)
	if errors.Is(err, keys.ErrWrongPassword) && (ks.Source == PasswordFile || ks.Source == PasswordFD) {
		if trimmed := bytes.TrimRight(pw, "\r\n"); len(trimmed) < len(pw) {
			if m2, err2 := keys.ParseMaterial(ks.File, data, trimmed); err2 == nil {
				return m2, nil
			}
		}
	}
	return m, err
}

func readPassword(ks KeySpec, env Env) ([]byte, error) {
	switch ks.Source {
	case PasswordLiteral:
		return bytes.Clone(ks.Password), nil
	case PasswordFile:
		f, err := os.Open(ks.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("password file for key %s: %w", ks.File, err)
		}
		defer f.Close()
		return readLimited(f, ks)
	case PasswordFD:
		if ks.FD == 0 && env.Stdin != nil {
			return readLimited(env.Stdin, ks)
		}
		f := os.NewFile(uintptr(ks.FD), fmt.Sprintf("fd%d", ks.FD))
		if f == nil {
			return nil, fmt.Errorf("password for key %s: fd %d is not open", ks.File, ks.FD)
		}
		defer f.Close()
		return readLimited(f, ks)
	}
	return nil, nil
}

func readLimited(r io.Reader, ks KeySpec) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxPassword+1))
	if err != nil {
		return nil, fmt.Errorf("reading password for key %s: %w", ks.File, err)
	}
	if len(b) > maxPassword {
		clear(b)
		return nil, fmt.Errorf("password for key %s is longer than %d bytes", ks.File, maxPassword)
	}
	return b, nil
}

// Describe returns human lines describing the recipients of one annotation
// entry of scheme (the suffix of org.opencontainers.image.enc.keys.): JWE
// algorithms and key ids, pkcs7 issuer and serial, pgp key ids, the kid of an
// attestation-agent entry, or the provider name for other providers. An
// unknown scheme is an error wrapping spec.ErrUnsupported.
func Describe(scheme string, entry []byte) ([]string, error) {
	switch scheme {
	case jwe.Scheme:
		return jwe.Describe(entry)
	case pkcs7.Scheme:
		return pkcs7.Describe(entry)
	case pgp.Scheme:
		return pgp.Describe(entry)
	}
	if name, ok := strings.CutPrefix(scheme, SchemeProvider+"."); ok && name != "" {
		return describeProvider(name, entry)
	}
	return nil, fmt.Errorf("unknown key scheme %q: %w", scheme, spec.ErrUnsupported)
}
