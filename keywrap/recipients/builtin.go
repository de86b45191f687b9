package recipients

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/ProtonMail/go-crypto/openpgp"

	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/keywrap/jwe"
	"github.com/coffer-dev/coffer/keywrap/keys"
	"github.com/coffer-dev/coffer/keywrap/pgp"
	"github.com/coffer-dev/coffer/keywrap/pkcs7"
	"github.com/coffer-dev/coffer/spec"
)

// jwe: every jwe recipient in one JWE object, as ocicrypt writes it.
var jweScheme = Scheme{
	Name: SchemeJWE, Value: "FILE", Annotation: jwe.Scheme,
	Wrappers: func(_ context.Context, files []string, _ *session) ([]keywrap.Wrapper, error) {
		var rs []jwe.Recipient
		for _, f := range files {
			pk, err := keys.LoadPublicKey(f)
			if err != nil {
				return nil, fmt.Errorf("recipient jwe:%s: %w", f, err)
			}
			r := jwe.Recipient{Key: pk.Key, Algorithm: pk.Algorithm, KeyID: pk.KeyID}
			if !containsJWE(rs, r) {
				rs = append(rs, r)
			}
		}
		w, err := jwe.NewWrapper(rs)
		if err != nil {
			return nil, err
		}
		return []keywrap.Wrapper{w}, nil
	},
	Uses: jwe.CanUse,
	Unwrapper: func(privs []crypto.PrivateKey, _ []*keys.Material, _ *session) (keywrap.Unwrapper, error) {
		return jwe.NewUnwrapper(privs...)
	},
	Describe: func(_ string, e []byte) ([]string, error) { return jwe.Describe(e) },
}

// pkcs7: one CMS EnvelopedData for every certificate.
var pkcs7Scheme = Scheme{
	Name: SchemePKCS7, Value: "FILE", Annotation: pkcs7.Scheme,
	Wrappers: func(_ context.Context, files []string, _ *session) ([]keywrap.Wrapper, error) {
		var certs []*x509.Certificate
		for _, f := range files {
			cs, err := keys.LoadCertificates(f)
			if err != nil {
				return nil, fmt.Errorf("recipient pkcs7:%s: %w", f, err)
			}
			for _, c := range cs {
				if !containsCert(certs, c) {
					certs = append(certs, c)
				}
			}
		}
		w, err := pkcs7.NewWrapper(certs)
		if err != nil {
			return nil, err
		}
		return []keywrap.Wrapper{w}, nil
	},
	Uses: pkcs7.CanUse,
	Unwrapper: func(privs []crypto.PrivateKey, ms []*keys.Material, _ *session) (keywrap.Unwrapper, error) {
		var certs []*x509.Certificate
		for _, m := range ms {
			certs = append(certs, m.Certs...)
		}
		return pkcs7.NewUnwrapper(privs, certs)
	},
	Describe: func(_ string, e []byte) ([]string, error) { return pkcs7.Describe(e) },
}

// pgp: one OpenPGP message for every key; its keys are OpenPGP entities,
// not crypto.PrivateKey values.
var pgpScheme = Scheme{
	Name: SchemePGP, Value: "FILE", Annotation: pgp.Scheme,
	Wrappers: func(_ context.Context, files []string, _ *session) ([]keywrap.Wrapper, error) {
		var to openpgp.EntityList
		for _, f := range files {
			el, err := keys.LoadOpenPGP(f)
			if err != nil {
				if errors.Is(err, spec.ErrNotFound) {
					return nil, fmt.Errorf("recipient pgp:%s: coffer takes an OpenPGP public key file (gpg --export --armor ID > key.asc), not a keyring name: %w",
						f, spec.ErrNotFound)
				}
				return nil, fmt.Errorf("recipient pgp:%s: %w", f, err)
			}
			for _, e := range el {
				if !containsEntity(to, e) {
					to = append(to, e)
				}
			}
		}
		w, err := pgp.NewWrapper(to)
		if err != nil {
			return nil, err
		}
		return []keywrap.Wrapper{w}, nil
	},
	Unwrapper: func(_ []crypto.PrivateKey, ms []*keys.Material, _ *session) (keywrap.Unwrapper, error) {
		var el openpgp.EntityList
		for _, m := range ms {
			el = append(el, m.OpenPGP...)
		}
		if len(el) == 0 {
			return nil, nil
		}
		return pgp.NewUnwrapper(el)
	},
	Describe: func(_ string, e []byte) ([]string, error) { return pgp.Describe(e) },
}

// provider: ocicrypt key providers (and attestation-agent natively), one
// wrapper per recipient, in the order given.
var providerScheme = Scheme{
	Name: SchemeProvider, Value: "NAME[:PARAMS]", Annotation: SchemeProvider + ".",
	Wrappers: func(_ context.Context, values []string, s *session) ([]keywrap.Wrapper, error) {
		var out []keywrap.Wrapper
		for _, v := range values {
			name, params, _ := cutProvider(v)
			w, err := s.prov.wrapper(name, params, s.env)
			if err != nil {
				return nil, fmt.Errorf("recipient provider:%s: %w", name, err)
			}
			out = append(out, w)
		}
		return out, nil
	},
	Describe: func(annotation string, e []byte) ([]string, error) {
		return describeProvider(annotation[len(SchemeProvider)+1:], e)
	},
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
