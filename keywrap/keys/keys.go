// Package keys reads the public and private key files coffer's key wrappers
// use: PKIX/PKCS#1 public keys, x509 certificates, JWKs, PKCS#8, PKCS#1 and
// SEC1 private keys (plain, legacy-encrypted PEM or encrypted PKCS#8), and
// OpenPGP public and secret keys, armored or binary.
//
// Results are typed (crypto.PrivateKey, *x509.Certificate, openpgp.EntityList).
// Errors name the file, never its content.
package keys

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/coffer-dev/coffer/internal/pemcert"
	"io/fs"
	"os"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/go-jose/go-jose/v4"

	"github.com/coffer-dev/coffer/spec"
)

var (
	// ErrWrongPassword is matched (errors.Is) by a *PasswordError for a
	// password that does not decrypt the key.
	ErrWrongPassword = errors.New("wrong password")
	// ErrPasswordRequired is matched by a *PasswordError for an encrypted key
	// given without a password.
	ErrPasswordRequired = errors.New("password required")

	errMalformed      = errors.New("malformed key")
	errUnsupportedKey = spec.ErrUnsupported
)

// PasswordError reports a missing or wrong password for an encrypted key file.
type PasswordError struct {
	File    string // the key file's name as given
	Missing bool   // true: no password was given; false: it was wrong
}

func (e *PasswordError) Error() string {
	if e.Missing {
		return fmt.Sprintf("key file %s is encrypted: give its password (%s:pass=…, %s:file=PASSFILE or %s:fd=N)",
			e.File, e.File, e.File, e.File)
	}
	return "wrong password for key file " + e.File
}

// Is makes errors.Is match ErrWrongPassword or ErrPasswordRequired.
func (e *PasswordError) Is(target error) bool {
	return (e.Missing && target == ErrPasswordRequired) || (!e.Missing && target == ErrWrongPassword)
}

// msgError carries a complete one-line message and the errors it matches.
type msgError struct {
	msg  string
	errs []error
}

func (e *msgError) Error() string   { return e.msg }
func (e *msgError) Unwrap() []error { return e.errs }

func errorf(sentinel error, format string, args ...any) error {
	return &msgError{msg: fmt.Sprintf(format, args...), errs: []error{sentinel}}
}

// PublicKey is a parsed recipient key.
type PublicKey struct {
	// Key is *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey.
	Key crypto.PublicKey
	// Algorithm is the JWK "alg" member ("" when not a JWK or absent).
	Algorithm string
	// KeyID is the JWK "kid" member ("" when not a JWK or absent).
	KeyID string
	// Cert is set when the key came from an x509 certificate.
	Cert *x509.Certificate
}

// Material is what one private key file (--key) holds: a private key,
// certificates, OpenPGP secret keys, or a combination (a PEM file may carry a
// key and its certificate).
type Material struct {
	// Name is the file name as given, for messages.
	Name string
	// Private is nil or one of *rsa.PrivateKey, *ecdsa.PrivateKey,
	// ed25519.PrivateKey, or another crypto.Decrypter.
	Private crypto.PrivateKey
	// KeyID is the "kid" of a private JWK.
	KeyID string
	// Certs are the x509 certificates found in the file.
	Certs []*x509.Certificate
	// OpenPGP holds entities with (decrypted) secret keys.
	OpenPGP openpgp.EntityList
}

const expectedPrivate = "expected PKCS#8, PKCS#1, SEC1, JWK or OpenPGP"

// readFile reads a key file; a missing file also matches spec.ErrNotFound.
func readFile(kind, path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &msgError{msg: fmt.Sprintf("%s %s does not exist", kind, path), errs: []error{spec.ErrNotFound, err}}
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", kind, err)
	}
	return data, nil
}

// ReadFile reads a key file as the Load functions do (a missing file is an
// error matching spec.ErrNotFound), for callers that parse it themselves.
func ReadFile(path string) ([]byte, error) { return readFile("key file", path) }

// LoadMaterial reads and parses a private key file; see ParseMaterial.
func LoadMaterial(path string, password []byte) (*Material, error) {
	data, err := readFile("key file", path)
	if err != nil {
		return nil, err
	}
	defer clear(data)
	return ParseMaterial(path, data, password)
}

// ParseMaterial parses a private key file named name. password may be nil;
// an encrypted key without one yields a *PasswordError (ErrPasswordRequired),
// a wrong one a *PasswordError (ErrWrongPassword). A file holding only a
// public key, or nothing recognizable, is an error wrapping
// spec.ErrUnsupported.
func ParseMaterial(name string, data, password []byte) (*Material, error) {
	m := &Material{Name: name}
	trimmed := bytes.TrimSpace(data)
	switch {
	case len(trimmed) == 0:
		return nil, errorf(errUnsupportedKey, "%s: empty key file", name)
	case trimmed[0] == '{':
		if err := m.parseJWK(trimmed); err != nil {
			return nil, err
		}
	case bytes.Contains(trimmed, []byte("-----BEGIN PGP")):
		el, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(trimmed))
		if err != nil {
			return nil, errorf(errUnsupportedKey, "%s: malformed armored OpenPGP key", name)
		}
		if err := m.setOpenPGP(el, password); err != nil {
			return nil, err
		}
	case bytes.Contains(trimmed, []byte("-----BEGIN ")):
		if err := m.parsePEM(trimmed, password); err != nil {
			return nil, err
		}
	default:
		if err := m.parseBinary(data, password); err != nil {
			return nil, err
		}
	}
	if m.Private == nil && len(m.Certs) == 0 && len(m.OpenPGP) == 0 {
		return nil, errorf(errUnsupportedKey, "%s: not a recognized private key (%s)", name, expectedPrivate)
	}
	return m, nil
}

func (m *Material) setPrivate(k crypto.PrivateKey) error {
	if m.Private != nil {
		return errorf(errUnsupportedKey, "%s: holds more than one private key; give one key per file", m.Name)
	}
	m.Private = k
	return nil
}

func (m *Material) parseJWK(data []byte) error {
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(data); err != nil {
		return errorf(errUnsupportedKey, "%s: not a recognized private key (%s): malformed JWK", m.Name, expectedPrivate)
	}
	if jwk.IsPublic() {
		return errorf(errUnsupportedKey, "%s: is a public JWK; a private key is needed here", m.Name)
	}
	switch k := jwk.Key.(type) {
	case *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey:
		m.Private, m.KeyID = k, jwk.KeyID
		return nil
	default:
		return errorf(errUnsupportedKey, "%s: JWK key type %T is not supported (need RSA or EC)", m.Name, jwk.Key)
	}
}

func (m *Material) parsePEM(data, password []byte) error {
	rest := data
	sawPublic := false
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch block.Type {
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return errorf(errMalformed, "%s: malformed certificate", m.Name)
			}
			m.Certs = append(m.Certs, c)
		case "PUBLIC KEY", "RSA PUBLIC KEY":
			sawPublic = true
		case "EC PARAMETERS":
			// openssl ecparam -genkey writes it before the key; nothing to do.
		case PEMSigstoreEncrypted, PEMCosignEncrypted:
			der, err := m.decryptSigstore(block.Bytes, password)
			if err != nil {
				return err
			}
			k, err := parsePrivateDER(der)
			clear(der)
			if err != nil {
				return errorf(errUnsupportedKey, "%s: malformed key inside the cosign envelope", m.Name)
			}
			if err := m.setPrivate(k); err != nil {
				return err
			}
		case "ENCRYPTED PRIVATE KEY":
			der, err := m.decryptPKCS8(block.Bytes, password)
			if err != nil {
				return err
			}
			k, err := m.parseDecrypted(der)
			if err != nil {
				return err
			}
			if err := m.setPrivate(k); err != nil {
				return err
			}
		default:
			if !strings.Contains(block.Type, "PRIVATE KEY") {
				continue
			}
			der := block.Bytes
			encrypted := x509.IsEncryptedPEMBlock(block) //nolint:staticcheck // legacy encrypted PEM is required
			if encrypted {
				if len(password) == 0 {
					return &PasswordError{File: m.Name, Missing: true}
				}
				var err error
				der, err = x509.DecryptPEMBlock(block, password) //nolint:staticcheck // legacy encrypted PEM is required
				if err != nil {
					return &PasswordError{File: m.Name}
				}
			}
			k, err := parsePrivateDER(der)
			if encrypted {
				clear(der)
			}
			if err != nil {
				if encrypted {
					return &PasswordError{File: m.Name}
				}
				return errorf(errUnsupportedKey, "%s: malformed %s", m.Name, strings.ToLower(block.Type))
			}
			if err := m.setPrivate(k); err != nil {
				return err
			}
		}
	}
	if m.Private == nil && len(m.Certs) == 0 && sawPublic {
		return errorf(errUnsupportedKey, "%s: is a public key; a private key is needed here", m.Name)
	}
	return nil
}

func (m *Material) decryptPKCS8(der, password []byte) ([]byte, error) {
	if len(password) == 0 {
		return nil, &PasswordError{File: m.Name, Missing: true}
	}
	pt, err := decryptPKCS8(der, password)
	switch {
	case errors.Is(err, ErrWrongPassword):
		return nil, &PasswordError{File: m.Name}
	case errors.Is(err, errUnsupportedKey):
		return nil, errorf(errUnsupportedKey, "%s: encrypted PKCS#8 key: %v", m.Name, err)
	case err != nil:
		return nil, errorf(errMalformed, "%s: encrypted PKCS#8 key: %v", m.Name, err)
	}
	return pt, nil
}

func (m *Material) parseBinary(data, password []byte) error {
	if k, err := parsePrivateDER(data); err == nil {
		m.Private = k
		return nil
	}
	if certs, err := x509.ParseCertificates(data); err == nil && len(certs) > 0 {
		m.Certs = certs
		return nil
	}
	if isEncryptedPKCS8(data) {
		der, err := m.decryptPKCS8(data, password)
		if err != nil {
			return err
		}
		k, err := m.parseDecrypted(der)
		if err != nil {
			return err
		}
		m.Private = k
		return nil
	}
	if len(data) > 0 && data[0]&0x80 != 0 {
		if el, err := openpgp.ReadKeyRing(bytes.NewReader(data)); err == nil {
			return m.setOpenPGP(el, password)
		}
	}
	if _, err := parsePublicDER(data); err == nil {
		return errorf(errUnsupportedKey, "%s: is a public key; a private key is needed here", m.Name)
	}
	return nil
}

func (m *Material) setOpenPGP(el openpgp.EntityList, password []byte) error {
	var secret openpgp.EntityList
	for _, e := range el {
		if e.PrivateKey != nil {
			secret = append(secret, e)
		}
	}
	if len(secret) == 0 {
		return errorf(errUnsupportedKey, "%s: is an OpenPGP public key; a secret key is needed here", m.Name)
	}
	for _, e := range secret {
		if !openPGPEncrypted(e) {
			continue
		}
		if len(password) == 0 {
			return &PasswordError{File: m.Name, Missing: true}
		}
		if err := e.DecryptPrivateKeys(password); err != nil {
			return &PasswordError{File: m.Name}
		}
	}
	m.OpenPGP = secret
	return nil
}

func openPGPEncrypted(e *openpgp.Entity) bool {
	if e.PrivateKey != nil && e.PrivateKey.Encrypted && !e.PrivateKey.Dummy() {
		return true
	}
	for _, s := range e.Subkeys {
		if s.PrivateKey != nil && s.PrivateKey.Encrypted && !s.PrivateKey.Dummy() {
			return true
		}
	}
	return false
}

// parseDecrypted parses (and then clears) the PKCS#8 DER from an encrypted
// PKCS#8 key. Well-formed PKCS#8 of an unsupported algorithm is reported as
// such; anything else means the password was wrong.
func (m *Material) parseDecrypted(der []byte) (crypto.PrivateKey, error) {
	defer clear(der)
	k, err := parsePrivateDER(der)
	if err == nil {
		return k, nil
	}
	var info struct {
		Version    int
		Algorithm  pkix.AlgorithmIdentifier
		PrivateKey []byte
	}
	if rest, aerr := asn1.Unmarshal(der, &info); aerr == nil && len(rest) == 0 && len(info.Algorithm.Algorithm) > 0 {
		return nil, errorf(errUnsupportedKey, "%s: private key algorithm %s is not supported (need RSA or EC)", m.Name, info.Algorithm.Algorithm)
	}
	return nil, &PasswordError{File: m.Name}
}

// parsePrivateDER tries PKCS#8, PKCS#1 and SEC1.
func parsePrivateDER(der []byte) (crypto.PrivateKey, error) {
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(der); err == nil {
		return k, nil
	}
	return nil, errMalformed
}

func parsePublicDER(der []byte) (crypto.PublicKey, error) {
	if k, err := x509.ParsePKIXPublicKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PublicKey(der); err == nil {
		return k, nil
	}
	return nil, errMalformed
}

const expectedPublic = "expected a PKIX or PKCS#1 public key, an x509 certificate or a JWK, PEM or DER"

// LoadPublicKey reads and parses a public key file; see ParsePublicKey.
func LoadPublicKey(path string) (*PublicKey, error) {
	data, err := readFile("public key file", path)
	if err != nil {
		return nil, err
	}
	return ParsePublicKey(path, data)
}

// ParsePublicKey parses a recipient public key: PKIX ("PUBLIC KEY") or
// PKCS#1 public key, x509 certificate (its key is used), or JWK (a private
// JWK contributes its public half), PEM or DER.
func ParsePublicKey(name string, data []byte) (*PublicKey, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > 0 && trimmed[0] == '{' {
		var jwk jose.JSONWebKey
		if err := jwk.UnmarshalJSON(trimmed); err != nil {
			return nil, errorf(errUnsupportedKey, "%s: not a recognized public key (%s): malformed JWK", name, expectedPublic)
		}
		pub := jwk.Public()
		switch pub.Key.(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
		default:
			return nil, errorf(errUnsupportedKey, "%s: JWK key type %T is not supported (need RSA or EC)", name, jwk.Key)
		}
		return &PublicKey{Key: pub.Key, Algorithm: jwk.Algorithm, KeyID: jwk.KeyID}, nil
	}
	der := data
	if block, _ := pem.Decode(trimmed); block != nil {
		der = block.Bytes
		if strings.Contains(block.Type, "PRIVATE KEY") {
			return nil, errorf(errUnsupportedKey, "%s: is a private key; give the public key (or certificate) here", name)
		}
	}
	if k, err := parsePublicDER(der); err == nil {
		return &PublicKey{Key: k}, nil
	}
	if c, err := x509.ParseCertificate(der); err == nil {
		return &PublicKey{Key: c.PublicKey, Cert: c}, nil
	}
	return nil, errorf(errUnsupportedKey, "%s: not a recognized public key (%s)", name, expectedPublic)
}

// LoadCertificates reads and parses a certificate file; see ParseCertificates.
func LoadCertificates(path string) ([]*x509.Certificate, error) {
	data, err := readFile("certificate file", path)
	if err != nil {
		return nil, err
	}
	return ParseCertificates(path, data)
}

// ParseCertificates parses one or more x509 certificates, PEM or DER.
func ParseCertificates(name string, data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := bytes.TrimSpace(data)
	if bytes.HasPrefix(rest, []byte("-----BEGIN ")) {
		cs, err := pemcert.Parse(rest, 0)
		if err != nil {
			return nil, errorf(errMalformed, "%s: malformed certificate", name)
		}
		certs = cs
	} else if cs, err := x509.ParseCertificates(data); err == nil {
		certs = cs
	}
	if len(certs) == 0 {
		return nil, errorf(errUnsupportedKey, "%s: not an x509 certificate (PEM or DER)", name)
	}
	return certs, nil
}

// LoadOpenPGP reads and parses an OpenPGP key file; see ParseOpenPGP.
func LoadOpenPGP(path string) (openpgp.EntityList, error) {
	data, err := readFile("OpenPGP key file", path)
	if err != nil {
		return nil, err
	}
	return ParseOpenPGP(path, data)
}

// ParseOpenPGP parses OpenPGP keys (public or secret, armored or binary) for
// use as recipients. Secret key material, if any, stays encrypted.
func ParseOpenPGP(name string, data []byte) (openpgp.EntityList, error) {
	var (
		el  openpgp.EntityList
		err error
	)
	if bytes.Contains(data, []byte("-----BEGIN PGP")) {
		el, err = openpgp.ReadArmoredKeyRing(bytes.NewReader(data))
	} else {
		el, err = openpgp.ReadKeyRing(bytes.NewReader(data))
	}
	if err != nil || len(el) == 0 {
		return nil, errorf(errUnsupportedKey, "%s: not an OpenPGP key (armored or binary)", name)
	}
	return el, nil
}
