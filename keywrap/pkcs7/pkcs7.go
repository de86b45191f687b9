// Package pkcs7 wraps layer options in a DER CMS EnvelopedData for x509
// certificate recipients, as ocicrypt does: smallstep/pkcs7 with AES-128-GCM
// content encryption and RSA PKCS#1 v1.5 key transport.
package pkcs7

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"

	"github.com/smallstep/pkcs7"

	"github.com/coffer-dev/coffer/internal/bounded"
	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/spec"
)

var (
	_ keywrap.Wrapper   = (*Wrapper)(nil)
	_ keywrap.Unwrapper = (*Unwrapper)(nil)
)

// Scheme is the annotation suffix of this wrapper.
const Scheme = "pkcs7"

// maxEntry bounds the size of an entry this package parses.
const maxEntry = 1 << 20

// smallstep/pkcs7 selects algorithms through package variables; every use in
// this process goes through this lock.
var libMu sync.Mutex

// ErrNeedCertificate is returned (not wrapping spec.ErrNoKey, so callers show
// it) when a pkcs7 entry must be opened with private keys but no certificate
// was given.
var ErrNeedCertificate = errors.New("pkcs7 decryption needs the recipient certificate: pass --key cert.pem too")

// Wrapper produces one EnvelopedData for a fixed set of certificates.
type Wrapper struct {
	certs []*x509.Certificate
}

// NewWrapper checks that every certificate carries an RSA key (the only key
// transport smallstep/pkcs7 and ocicrypt do).
func NewWrapper(certs []*x509.Certificate) (*Wrapper, error) {
	if len(certs) == 0 {
		return nil, errors.New("pkcs7: no recipient certificates")
	}
	for _, c := range certs {
		if _, ok := c.PublicKey.(*rsa.PublicKey); !ok {
			return nil, fmt.Errorf("pkcs7 recipient %q: certificate key type %T (need RSA): %w",
				c.Subject.String(), c.PublicKey, spec.ErrUnsupported)
		}
	}
	return &Wrapper{certs: certs}, nil
}

// Scheme returns "pkcs7".
func (w *Wrapper) Scheme() string { return Scheme }

// Wrap encrypts privopts (AES-128-GCM) and transports the content key to each
// certificate (RSA PKCS#1 v1.5). The result is DER.
func (w *Wrapper) Wrap(ctx context.Context, privopts []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	libMu.Lock()
	defer libMu.Unlock()
	pkcs7.ContentEncryptionAlgorithm = pkcs7.EncryptionAlgorithmAES128GCM
	pkcs7.KeyEncryptionAlgorithm = pkcs7.OIDEncryptionAlgorithmRSA
	out, err := pkcs7.Encrypt(privopts, w.certs)
	if err != nil {
		return nil, fmt.Errorf("pkcs7: encrypting: %w", err)
	}
	return out, nil
}

type pair struct {
	cert *x509.Certificate
	key  crypto.Decrypter
}

// Unwrapper opens pkcs7 entries with RSA private keys and their certificates.
type Unwrapper struct {
	pairs  []pair
	nKeys  int
	nCerts int
}

// NewUnwrapper pairs each certificate with the private key of the same public
// key. keys must be crypto.Decrypters with RSA public keys (*rsa.PrivateKey
// or an HSM/TPM key). Certificates without a key are ignored; keys given
// without any certificate make Unwrap fail with ErrNeedCertificate.
func NewUnwrapper(keys []crypto.PrivateKey, certs []*x509.Certificate) (*Unwrapper, error) {
	u := &Unwrapper{}
	var decs []crypto.Decrypter
	for i, k := range keys {
		if !CanUse(k) {
			return nil, fmt.Errorf("pkcs7 key %d: key type %T (need RSA): %w", i, k, spec.ErrUnsupported)
		}
		decs = append(decs, k.(crypto.Decrypter))
	}
	u.nKeys, u.nCerts = len(decs), len(certs)
	for _, c := range certs {
		cpub, ok := c.PublicKey.(*rsa.PublicKey)
		if !ok {
			continue
		}
		for _, d := range decs {
			if cpub.Equal(d.Public()) {
				u.pairs = append(u.pairs, pair{cert: c, key: d})
				break
			}
		}
	}
	return u, nil
}

// CanUse reports whether k can open pkcs7 entries (an RSA crypto.Decrypter).
func CanUse(k crypto.PrivateKey) bool {
	d, ok := k.(crypto.Decrypter)
	if !ok {
		return false
	}
	_, ok = d.Public().(*rsa.PublicKey)
	return ok
}

// Scheme returns "pkcs7".
func (u *Unwrapper) Scheme() string { return Scheme }

// Unwrap decrypts an EnvelopedData entry with the key whose certificate is
// one of its recipients. No such pair: spec.ErrNoKey, or ErrNeedCertificate
// when keys were given without any certificate.
func (u *Unwrapper) Unwrap(ctx context.Context, entry []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	infos, err := parseRecipients(entry)
	if err != nil {
		return nil, err
	}
	var match *pair
	for i := range u.pairs {
		for _, ri := range infos {
			if isRecipient(u.pairs[i].cert, ri) {
				match = &u.pairs[i]
				break
			}
		}
		if match != nil {
			break
		}
	}
	if match == nil {
		if u.nCerts == 0 && u.nKeys > 0 {
			return nil, ErrNeedCertificate
		}
		return nil, fmt.Errorf("pkcs7: none of the given certificates is a recipient: %w", spec.ErrNoKey)
	}
	libMu.Lock()
	defer libMu.Unlock()
	p7, err := pkcs7.Parse(entry)
	if err != nil {
		return nil, fmt.Errorf("parsing pkcs7 entry: %v: %w", err, spec.ErrUnsupported)
	}
	pt, err := p7.Decrypt(match.cert, match.key)
	if err != nil {
		return nil, fmt.Errorf("pkcs7: decrypting for %s: %v: %w", certName(match.cert), err, spec.ErrIntegrity)
	}
	return pt, nil
}

// Wire structures, enough to list recipients.
type contentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue `asn1:"explicit,optional,tag:0"`
}

type envelopedData struct {
	Version        int
	RecipientInfos []recipientInfo `asn1:"set"`
	Rest           asn1.RawValue
}

type recipientInfo struct {
	Version               int
	IssuerAndSerialNumber issuerAndSerial
	KeyEncryptionAlg      pkix.AlgorithmIdentifier
	EncryptedKey          []byte
}

type issuerAndSerial struct {
	IssuerName   asn1.RawValue
	SerialNumber *big.Int
}

var oidEnvelopedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 3}

func parseRecipients(entry []byte) ([]recipientInfo, error) {
	bad := func(what string) error {
		return fmt.Errorf("parsing pkcs7 entry: %s: %w", what, spec.ErrUnsupported)
	}
	if len(entry) > maxEntry {
		return nil, bad("too large")
	}
	var ci contentInfo
	if rest, err := asn1.Unmarshal(entry, &ci); err != nil || len(rest) != 0 {
		return nil, bad("not DER ContentInfo")
	}
	if !ci.ContentType.Equal(oidEnvelopedData) {
		return nil, bad("not EnvelopedData")
	}
	var ed envelopedData
	if _, err := asn1.Unmarshal(ci.Content.Bytes, &ed); err != nil {
		return nil, bad("malformed EnvelopedData")
	}
	if len(ed.RecipientInfos) == 0 {
		return nil, bad("no recipients")
	}
	return ed.RecipientInfos, nil
}

func isRecipient(c *x509.Certificate, ri recipientInfo) bool {
	return ri.IssuerAndSerialNumber.SerialNumber != nil &&
		c.SerialNumber.Cmp(ri.IssuerAndSerialNumber.SerialNumber) == 0 &&
		bytes.Equal(c.RawIssuer, ri.IssuerAndSerialNumber.IssuerName.FullBytes)
}

func certName(c *x509.Certificate) string {
	return fmt.Sprintf("issuer %q serial %s", c.Issuer.String(), c.SerialNumber.Text(16))
}

// Describe lists the recipients of a pkcs7 entry (in DER SET order), one line each:
// `issuer="CN=…" serial=0x…`.
func Describe(entry []byte) ([]string, error) {
	infos, err := parseRecipients(entry)
	if err != nil {
		return nil, err
	}
	lines := make([]string, 0, len(infos))
	for _, ri := range infos {
		issuer := "?"
		var name pkix.RDNSequence
		if _, err := asn1.Unmarshal(ri.IssuerAndSerialNumber.IssuerName.FullBytes, &name); err == nil {
			issuer = name.String()
		}
		serial := "?"
		if s := ri.IssuerAndSerialNumber.SerialNumber; s != nil {
			serial = "0x" + strings.ToUpper(s.Text(16))
		}
		lines = append(lines, fmt.Sprintf("issuer=%q serial=%s", printable(issuer), serial))
	}
	return lines, nil
}

func printable(s string) string { return bounded.Printable(s, 0) }
