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
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/keywrap/keys"
	"github.com/coffer-dev/coffer/keywrap/pkcs11"
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
	// PKCS11 says which PKCS#11 modules pkcs11 keys and recipients may
	// load (ocicrypt's config, OCICRYPT_CONFIG; pkcs11.LoadConfig). The
	// zero value allows none.
	PKCS11 pkcs11.Config
	// OAEPHash is OCICRYPT_OAEP_HASHALG: the OAEP hash of pkcs11
	// recipients, "" or sha256 (default) or sha1 (for SoftHSM 2.6).
	OAEPHash string
}

// maxPassword bounds a password read from a file or descriptor.
const maxPassword = 64 << 10

// ParseRecipients parses --recipient strings ("SCHEME:VALUE", see
// ParseRecipient) and returns the wrappers of every scheme of the table
// that has recipients, in table order (jwe, pkcs7, pgp, mlkem, pkcs11, then one per
// provider recipient in the order given). An unknown scheme is an error
// wrapping spec.ErrUnsupported naming the accepted ones. Duplicate keys are
// wrapped for once.
func ParseRecipients(ctx context.Context, specs []string, env Env) ([]keywrap.Wrapper, error) {
	values := map[*Scheme][]string{}
	for _, s := range specs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r, err := ParseRecipient(s)
		if err != nil {
			return nil, err
		}
		v := r.File
		if r.Scheme == SchemeProvider {
			v = r.Provider + ":" + r.Params
		}
		sc := lookup(r.Scheme)
		values[sc] = append(values[sc], v)
	}
	sess := &session{env: env}
	var out []keywrap.Wrapper
	for _, sc := range schemes {
		if len(values[sc]) == 0 {
			continue
		}
		ws, err := sc.Wrappers(ctx, values[sc], sess)
		if err != nil {
			return nil, err
		}
		out = append(out, ws...)
	}
	return out, nil
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
	out, err := unwrappers(ms, &session{env: env}, providers)
	if err != nil {
		return nil, err
	}
	if len(out) == 0 && len(specs) > 0 {
		return nil, fmt.Errorf("no private key among the --key arguments (certificates alone cannot decrypt): %w", spec.ErrNoKey)
	}
	return out, nil
}

// Unwrappers turns parsed key material into unwrappers in table order
// (jwe, pkcs7, pgp, mlkem), then the given providers. One key may serve
// several schemes (an RSA key opens jwe and pkcs7 entries); certificates
// supply what pkcs7 needs. A private key that opens no scheme is an error.
//
// Keys that need the environment (pkcs11 keys: which modules may load)
// get the zero Env here; ParseKeys passes its own.
func Unwrappers(ms []*keys.Material, providers ...keywrap.Unwrapper) ([]keywrap.Unwrapper, error) {
	return unwrappers(ms, &session{}, providers)
}

func unwrappers(ms []*keys.Material, sess *session, providers []keywrap.Unwrapper) ([]keywrap.Unwrapper, error) {
	privs := map[*Scheme][]crypto.PrivateKey{}
	for _, m := range ms {
		if m.Private == nil {
			continue
		}
		used := false
		for _, sc := range schemes {
			if sc.Uses != nil && sc.Uses(m.Private) {
				privs[sc] = append(privs[sc], m.Private)
				used = true
			}
		}
		if !used {
			return nil, fmt.Errorf("key %s: %T keys open no coffer scheme (jwe and pkcs7 need RSA or EC P-256/384/521 keys, mlkem an ML-KEM-768 JWK, pkcs11 a pkcs11 key file): %w",
				m.Name, m.Private, spec.ErrUnsupported)
		}
	}
	var out []keywrap.Unwrapper
	for _, sc := range schemes {
		if sc.Unwrapper == nil || (sc.Uses != nil && len(privs[sc]) == 0) {
			continue
		}
		u, err := sc.Unwrapper(privs[sc], ms, sess)
		if err != nil {
			return nil, err
		}
		if u != nil {
			out = append(out, u)
		}
	}
	return append(out, providers...), nil
}

// ParseMaterial parses a key file as keys.ParseMaterial does, and also the
// key files of schemes keys does not know (an ML-KEM JWK): the one key
// parser for key files and directories.
func ParseMaterial(name string, data, password []byte) (*keys.Material, error) {
	for _, sc := range schemes {
		if sc.ParseKey == nil {
			continue
		}
		k, kid, ok, err := sc.ParseKey(data)
		if !ok {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return &keys.Material{Name: name, Private: k, KeyID: kid}, nil
	}
	return keys.ParseMaterial(name, data, password)
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
	m, err := ParseMaterial(ks.File, data, pw)
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
// algorithms and key ids (ML-KEM entries too), pkcs7 issuer and serial, pgp
// key ids, the kid of an attestation-agent entry, or the provider name for
// other providers. Schemes sharing an annotation are tried in table order;
// the first that reads the entry answers. An unknown scheme is an error
// wrapping spec.ErrUnsupported.
func Describe(scheme string, entry []byte) ([]string, error) {
	var first error
	for _, sc := range schemes {
		if !sc.owns(scheme) || sc.Describe == nil {
			continue
		}
		lines, err := sc.Describe(scheme, entry)
		if err == nil {
			return lines, nil
		}
		if first == nil {
			first = err
		}
	}
	if first != nil {
		return nil, first
	}
	return nil, fmt.Errorf("unknown key scheme %q: %w", scheme, spec.ErrUnsupported)
}
