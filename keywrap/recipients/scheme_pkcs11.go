package recipients

import (
	"context"
	"crypto"
	"crypto/rsa"
	"fmt"

	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/keywrap/keys"
	"github.com/coffer-dev/coffer/keywrap/pkcs11"
	"github.com/coffer-dev/coffer/spec"
)

// SchemePKCS11 is ocicrypt's pkcs11 scheme: RSA-OAEP for every recipient
// in one JSON entry, opened by a private key on a PKCS#11 token.
const SchemePKCS11 = pkcs11.Scheme

// pkcs11: recipients are pkcs11 key files (the token encrypts with its
// public key object) or RSA public key files (encrypted in software), as
// ocicrypt takes them; --key files are pkcs11 key files (YAML with a
// pkcs11: URI), whose private key stays on the token.
var pkcs11Scheme = Scheme{
	Name: SchemePKCS11, Value: "FILE", Annotation: pkcs11.Scheme,
	Wrappers: func(_ context.Context, files []string, s *session) ([]keywrap.Wrapper, error) {
		h, err := pkcs11.ParseHash(s.env.OAEPHash)
		if err != nil {
			return nil, fmt.Errorf("OCICRYPT_OAEP_HASHALG: %w", err)
		}
		var rs []pkcs11.Recipient
		for _, f := range files {
			data, err := keys.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("recipient pkcs11:%s: %w", f, err)
			}
			if pkcs11.IsKeyFile(data) {
				k, err := pkcs11.ParseKeyFile(data)
				if err != nil {
					return nil, fmt.Errorf("recipient pkcs11:%s: %w", f, err)
				}
				rs = append(rs, pkcs11.Recipient{Key: k})
				continue
			}
			pk, err := keys.ParsePublicKey(f, data)
			if err != nil {
				return nil, fmt.Errorf("recipient pkcs11:%s: not a pkcs11 key file, and %w", f, err)
			}
			rsaKey, ok := pk.Key.(*rsa.PublicKey)
			if !ok {
				return nil, fmt.Errorf("recipient pkcs11:%s: %T key: the pkcs11 scheme needs RSA: %w", f, pk.Key, spec.ErrUnsupported)
			}
			if !containsRSA(rs, rsaKey) {
				rs = append(rs, pkcs11.Recipient{Public: rsaKey})
			}
		}
		w, err := pkcs11.NewWrapper(s.env.PKCS11, h, rs...)
		if err != nil {
			return nil, err
		}
		return []keywrap.Wrapper{w}, nil
	},
	ParseKey: func(data []byte) (crypto.PrivateKey, string, bool, error) {
		if !pkcs11.IsKeyFile(data) {
			return nil, "", false, nil
		}
		k, err := pkcs11.ParseKeyFile(data)
		if err != nil {
			return nil, "", true, err
		}
		return k, k.String(), true, nil
	},
	Uses: func(k crypto.PrivateKey) bool { _, ok := k.(*pkcs11.Key); return ok },
	Unwrapper: func(privs []crypto.PrivateKey, _ []*keys.Material, s *session) (keywrap.Unwrapper, error) {
		ks := make([]*pkcs11.Key, len(privs))
		for i, k := range privs {
			ks[i] = k.(*pkcs11.Key)
		}
		return pkcs11.NewUnwrapper(s.env.PKCS11, ks...)
	},
	Describe: func(_ string, e []byte) ([]string, error) { return pkcs11.Describe(e) },
}

var (
	_ keywrap.Wrapper   = (*pkcs11.Wrapper)(nil)
	_ keywrap.Unwrapper = (*pkcs11.Unwrapper)(nil)
)

func containsRSA(rs []pkcs11.Recipient, k *rsa.PublicKey) bool {
	for _, r := range rs {
		if r.Public != nil && r.Public.Equal(k) {
			return true
		}
	}
	return false
}
