package protocol

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	gomlkem "crypto/mlkem"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"sync"

	josecipher "github.com/go-jose/go-jose/v4/cipher"

	"github.com/coffer-dev/coffer/jcs"
	"github.com/coffer-dev/coffer/keywrap/mlkem"
	"github.com/coffer-dev/coffer/spec"
)

var b64 = base64.RawURLEncoding

// SerializeProtectedHeader returns the base64url (no padding) form of a JWE
// protected header in the member order the reference client reproduces when
// it recomputes the AAD: "alg", then "enc", then the other members in sorted
// key order, compact, nested objects canonical (RFC 8785).
func SerializeProtectedHeader(alg, enc string, others map[string]any) (string, error) {
	var b bytes.Buffer
	b.WriteString(`{"alg":`)
	jcs.WriteString(&b, alg)
	b.WriteString(`,"enc":`)
	jcs.WriteString(&b, enc)
	keys := make([]string, 0, len(others))
	for k := range others {
		if k == "alg" || k == "enc" {
			return "", fmt.Errorf("protected header: duplicate %q: %w", k, spec.ErrUnsupported)
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v, err := CanonicalizeValue(others[k])
		if err != nil {
			return "", err
		}
		b.WriteByte(',')
		jcs.WriteString(&b, k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b64.EncodeToString(b.Bytes()), nil
}

// ecCurve maps a JWK crv to its curves.
func ecCurve(crv string) (ecdh.Curve, elliptic.Curve, error) {
	switch crv {
	case "P-256":
		return ecdh.P256(), elliptic.P256(), nil
	case "P-384":
		return ecdh.P384(), elliptic.P384(), nil
	case "P-521":
		return ecdh.P521(), elliptic.P521(), nil
	}
	return nil, nil, fmt.Errorf("curve %q: %w", crv, spec.ErrUnsupported)
}

func coordSize(c elliptic.Curve) int { return (c.Params().BitSize + 7) / 8 }

// ecdhPublic decodes an EC JWK into an ECDH public key (on-curve checked).
func ecdhPublic(crv, x, y string) (*ecdh.PublicKey, error) {
	ec, ell, err := ecCurve(crv)
	if err != nil {
		return nil, err
	}
	n := coordSize(ell)
	xb, err1 := b64.DecodeString(x)
	yb, err2 := b64.DecodeString(y)
	if err1 != nil || err2 != nil || len(xb) != n || len(yb) != n {
		return nil, fmt.Errorf("ec key coordinates: %w", spec.ErrUnsupported)
	}
	pt := make([]byte, 0, 1+2*n)
	pt = append(append(append(pt, 4), xb...), yb...)
	pub, err := ec.NewPublicKey(pt)
	if err != nil {
		return nil, fmt.Errorf("ec key: %v: %w", err, spec.ErrUnsupported)
	}
	return pub, nil
}

// PublicKey decodes the JWK into *ecdsa.PublicKey or *rsa.PublicKey.
func (k TeePubKey) PublicKey() (crypto.PublicKey, error) {
	switch k.Kty {
	case "EC":
		pub, err := ecdhPublic(k.Crv, k.X, k.Y)
		if err != nil {
			return nil, err
		}
		_, ell, _ := ecCurve(k.Crv)
		n := coordSize(ell)
		raw := pub.Bytes()
		return &ecdsa.PublicKey{Curve: ell, X: new(big.Int).SetBytes(raw[1 : 1+n]), Y: new(big.Int).SetBytes(raw[1+n:])}, nil
	case "RSA":
		return rsaPublic(k)
	case mlkem.KeyType:
		return akpPublic(k)
	}
	return nil, fmt.Errorf("tee key type %q: %w", k.Kty, spec.ErrUnsupported)
}

// akpPublic decodes an AKP tee key: only ML-KEM-768+A192KW (trustee's
// prototype, draft-ietf-jose-pqc-kem-05).
func akpPublic(k TeePubKey) (*gomlkem.EncapsulationKey768, error) {
	if k.Alg != mlkem.Algorithm {
		return nil, fmt.Errorf("AKP tee key alg %q (only %s): %w", k.Alg, mlkem.Algorithm, spec.ErrUnsupported)
	}
	if b64.DecodedLen(len(k.Pub)) != gomlkem.EncapsulationKeySize768 {
		return nil, fmt.Errorf("ML-KEM-768 tee key is not %d bytes: %w", gomlkem.EncapsulationKeySize768, spec.ErrUnsupported)
	}
	raw, err := b64.DecodeString(k.Pub)
	if err != nil {
		return nil, fmt.Errorf("ML-KEM-768 tee key encoding: %w", spec.ErrUnsupported)
	}
	ek, err := gomlkem.NewEncapsulationKey768(raw)
	if err != nil {
		return nil, fmt.Errorf("ML-KEM-768 tee key: %v: %w", err, spec.ErrUnsupported)
	}
	return ek, nil
}

func rsaPublic(k TeePubKey) (*rsa.PublicKey, error) {
	nb, err1 := b64.DecodeString(k.N)
	eb, err2 := b64.DecodeString(k.E)
	if err1 != nil || err2 != nil || len(eb) == 0 || len(eb) > 4 {
		return nil, fmt.Errorf("rsa key encoding: %w", spec.ErrUnsupported)
	}
	var e uint32
	for _, c := range eb {
		e = e<<8 | uint32(c)
	}
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(nb), E: int(e)}
	if pub.N.BitLen() < 2048 || pub.N.BitLen() > 8192 || e < 3 || e%2 == 0 {
		return nil, fmt.Errorf("rsa key of %d bits, exponent %d: %w", pub.N.BitLen(), e, spec.ErrUnsupported)
	}
	return pub, nil
}

// PublicTeeKey returns the JWK for an *ecdsa.PublicKey (alg ECDH-ES+A256KW),
// *rsa.PublicKey (alg RSA-OAEP-256) or *mlkem.EncapsulationKey768 (kty AKP,
// alg ML-KEM-768+A192KW).
func PublicTeeKey(pub crypto.PublicKey) (TeePubKey, error) {
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		crv := p.Curve.Params().Name
		if _, _, err := ecCurve(crv); err != nil {
			return TeePubKey{}, err
		}
		raw, err := p.Bytes()
		if err != nil {
			return TeePubKey{}, fmt.Errorf("ec key: %v: %w", err, spec.ErrUnsupported)
		}
		n := coordSize(p.Curve)
		return TeePubKey{Kty: "EC", Alg: KeyAlgECDHESA256KW, Crv: crv,
			X: b64.EncodeToString(raw[1 : 1+n]), Y: b64.EncodeToString(raw[1+n:])}, nil
	case *rsa.PublicKey:
		e := binary.BigEndian.AppendUint32(nil, uint32(p.E))
		e = bytes.TrimLeft(e, "\x00")
		return TeePubKey{Kty: "RSA", Alg: KeyAlgRSAOAEP256, N: b64.EncodeToString(p.N.Bytes()), E: b64.EncodeToString(e)}, nil
	case *gomlkem.EncapsulationKey768:
		return TeePubKey{Kty: mlkem.KeyType, Alg: mlkem.Algorithm, Pub: b64.EncodeToString(p.Bytes())}, nil
	}
	return TeePubKey{}, fmt.Errorf("tee key %T: %w", pub, spec.ErrUnsupported)
}

// GenerateTeeKey makes the default client tee key: EC P-256 for
// ECDH-ES+A256KW, as the reference client does. Keep the private key for Open.
func GenerateTeeKey() (*ecdsa.PrivateKey, TeePubKey, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, TeePubKey{}, err
	}
	pub, err := PublicTeeKey(&priv.PublicKey)
	return priv, pub, err
}

// concatKEK derives the A256KW key-encryption key from an ECDH secret (RFC 7518 §4.6).
func concatKEK(z []byte) []byte {
	lp := func(b []byte) []byte { return binary.BigEndian.AppendUint32(nil, uint32(len(b))) }
	algID := append(lp([]byte(KeyAlgECDHESA256KW)), KeyAlgECDHESA256KW...)
	supPub := binary.BigEndian.AppendUint32(nil, 256)
	r := josecipher.NewConcatKDF(crypto.SHA256, z, algID, lp(nil), lp(nil), supPub, nil)
	kek := make([]byte, 32)
	_, _ = r.Read(kek)
	return kek
}

// Seal encrypts plaintext to the tee key as a flattened JWE with enc A256GCM:
// EC keys (P-256, P-384, P-521) use ECDH-ES+A256KW with the ephemeral key in
// the "epk" header, RSA keys RSA-OAEP-256 (or RSA1_5 when the key's alg asks
// for it). It is NewSealer(pub) followed by one Seal.
func Seal(pub TeePubKey, plaintext []byte) (*Response, error) {
	s, err := NewSealer(pub)
	if err != nil {
		return nil, err
	}
	return s.Seal(plaintext)
}

// Sealer seals any number of resources to one tee key; it is safe for
// concurrent use. For EC keys the ECDH agreement is done once, in
// NewSealer: every Response of a Sealer carries the same ephemeral key
// ("epk", hence the same protected header) and wraps a fresh random content
// key under the same derived key-encryption key. Responses of one Sealer are
// therefore linkable to each other (as the token that authorizes them
// already is), which is the price of skipping two scalar multiplications per
// resource. Use one Sealer per attested tee key, never across keys.
type Sealer struct {
	alg       string
	protected string
	kek       cipher.Block                 // ECDH-ES+A256KW
	rsa       *rsa.PublicKey               // RSA-OAEP-256, RSA1_5
	mlkem     *gomlkem.EncapsulationKey768 // ML-KEM-768+A192KW: one encapsulation per response
}

// NewSealer prepares sealing to pub (see Seal for the algorithms).
func NewSealer(pub TeePubKey) (*Sealer, error) {
	s := &Sealer{}
	others := map[string]any{}
	switch pub.Kty {
	case "EC":
		if pub.Alg != "" && pub.Alg != KeyAlgECDHESA256KW {
			return nil, fmt.Errorf("ec tee key alg %q: %w", pub.Alg, spec.ErrUnsupported)
		}
		s.alg = KeyAlgECDHESA256KW
		peer, err := ecdhPublic(pub.Crv, pub.X, pub.Y)
		if err != nil {
			return nil, err
		}
		eph, err := peer.Curve().GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		z, err := eph.ECDH(peer)
		if err != nil {
			return nil, fmt.Errorf("ecdh: %v: %w", err, spec.ErrUnsupported)
		}
		s.kek, _ = aes.NewCipher(concatKEK(z))
		clear(z)
		raw := eph.PublicKey().Bytes()
		n := (len(raw) - 1) / 2
		others["epk"] = map[string]string{"crv": pub.Crv, "kty": "EC",
			"x": b64.EncodeToString(raw[1 : 1+n]), "y": b64.EncodeToString(raw[1+n:])}
	case "RSA":
		rpub, err := rsaPublic(pub)
		if err != nil {
			return nil, err
		}
		s.rsa = rpub
		switch pub.Alg {
		case "", KeyAlgRSAOAEP256:
			s.alg = KeyAlgRSAOAEP256
		case KeyAlgRSA15:
			s.alg = KeyAlgRSA15
		default:
			return nil, fmt.Errorf("rsa tee key alg %q: %w", pub.Alg, spec.ErrUnsupported)
		}
	case mlkem.KeyType:
		ek, err := akpPublic(pub)
		if err != nil {
			return nil, err
		}
		s.alg, s.mlkem = mlkem.Algorithm, ek
		return s, nil
	default:
		return nil, fmt.Errorf("tee key type %q: %w", pub.Kty, spec.ErrUnsupported)
	}
	var err error
	if s.protected, err = SerializeProtectedHeader(s.alg, ContentEncA256GCM, others); err != nil {
		return nil, err
	}
	return s, nil
}

// Seal encrypts plaintext under a fresh content key.
func (s *Sealer) Seal(plaintext []byte) (*Response, error) {
	if s.mlkem != nil {
		return sealMLKEM(s.mlkem, plaintext)
	}
	cek := make([]byte, 32)
	if _, err := rand.Read(cek); err != nil {
		return nil, err
	}
	defer clear(cek)
	var encKey []byte
	var err error
	switch s.alg {
	case KeyAlgECDHESA256KW:
		encKey, err = josecipher.KeyWrap(s.kek, cek)
	case KeyAlgRSAOAEP256:
		encKey, err = rsa.EncryptOAEP(sha256.New(), rand.Reader, s.rsa, cek, nil)
	case KeyAlgRSA15:
		encKey, err = rsa.EncryptPKCS1v15(rand.Reader, s.rsa, cek)
	}
	if err != nil {
		return nil, err
	}
	block, _ := aes.NewCipher(cek)
	gcm, _ := cipher.NewGCM(block)
	iv := make([]byte, gcm.NonceSize())
	if _, err := rand.Read(iv); err != nil {
		return nil, err
	}
	ct := gcm.Seal(nil, iv, plaintext, []byte(s.protected))
	tagAt := len(ct) - gcm.Overhead()
	return &Response{
		Protected:    s.protected,
		EncryptedKey: b64.EncodeToString(encKey),
		IV:           b64.EncodeToString(iv),
		Ciphertext:   b64.EncodeToString(ct[:tagAt]),
		Tag:          b64.EncodeToString(ct[tagAt:]),
	}, nil
}

// sealMLKEM seals to an ML-KEM-768 tee key as trustee's prototype does
// (kbs/src/jwe/akp.rs at 03cd7bff88ad177fcb4f6537bc964f3365d7b199): the
// JWE of package keywrap/mlkem, whose flattened JSON members are those of
// Response; protected header {"alg","enc","ek"}.
func sealMLKEM(ek *gomlkem.EncapsulationKey768, plaintext []byte) (*Response, error) {
	b, err := mlkem.Seal(ek, "", plaintext)
	if err != nil {
		return nil, err
	}
	var r Response
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Open decrypts a Response with the tee private key: *ecdsa.PrivateKey or
// *ecdh.PrivateKey for ECDH-ES+A256KW, or an RSA crypto.Decrypter (such as
// *rsa.PrivateKey) for RSA-OAEP-256 / RSA1_5. The AAD is the received
// protected string. Failures wrap spec.ErrIntegrity or spec.ErrUnsupported.
// A client opening several resources should keep one Opener instead.
func Open(priv crypto.PrivateKey, r *Response) ([]byte, error) {
	o, err := NewOpener(priv)
	if err != nil {
		return nil, err
	}
	return o.Open(r)
}

// Opener opens Responses sealed to one tee key; it is safe for concurrent
// use. It remembers the key-encryption key derived for each ephemeral key
// ("epk") it has seen (a few, most recent), so the responses of one broker
// Sealer cost one ECDH in total rather than one each.
type Opener struct {
	ec  *ecdh.PrivateKey             // ECDH-ES+A256KW
	dec crypto.Decrypter             // RSA
	pq  *gomlkem.DecapsulationKey768 // ML-KEM-768+A192KW

	mu   sync.Mutex
	keks map[string]cipher.Block // by protected header
	fifo []string
}

const openerCache = 16

// NewOpener prepares opening with priv (see Open for the key types).
func NewOpener(priv crypto.PrivateKey) (*Opener, error) {
	o := &Opener{keks: map[string]cipher.Block{}}
	switch k := priv.(type) {
	case *ecdsa.PrivateKey:
		ek, err := k.ECDH()
		if err != nil {
			return nil, fmt.Errorf("tee key: %v: %w", err, spec.ErrUnsupported)
		}
		o.ec = ek
	case *ecdh.PrivateKey:
		o.ec = k
	case *gomlkem.DecapsulationKey768:
		o.pq = k
	case crypto.Decrypter:
		if _, isRSA := k.Public().(*rsa.PublicKey); !isRSA {
			return nil, fmt.Errorf("tee key %T: %w", priv, spec.ErrUnsupported)
		}
		o.dec = k
	default:
		return nil, fmt.Errorf("tee key %T: %w", priv, spec.ErrUnsupported)
	}
	return o, nil
}

func (o *Opener) kek(protected string, epk *jweEPK) (cipher.Block, error) {
	o.mu.Lock()
	kek, ok := o.keks[protected]
	o.mu.Unlock()
	if ok {
		return kek, nil
	}
	if epk == nil || epk.Kty != "EC" {
		return nil, fmt.Errorf("jwe epk missing: %w", spec.ErrIntegrity)
	}
	peer, err := ecdhPublic(epk.Crv, epk.X, epk.Y)
	if err != nil {
		return nil, err
	}
	if peer.Curve() != o.ec.Curve() {
		return nil, fmt.Errorf("jwe epk curve %s differs from the tee key: %w", epk.Crv, spec.ErrNoKey)
	}
	z, err := o.ec.ECDH(peer)
	if err != nil {
		return nil, fmt.Errorf("ecdh: %v: %w", err, spec.ErrIntegrity)
	}
	kek, _ = aes.NewCipher(concatKEK(z))
	clear(z)
	o.mu.Lock()
	if _, dup := o.keks[protected]; !dup {
		if len(o.fifo) >= openerCache {
			delete(o.keks, o.fifo[0])
			o.fifo = o.fifo[1:]
		}
		o.keks[protected] = kek
		o.fifo = append(o.fifo, protected)
	}
	o.mu.Unlock()
	return kek, nil
}

// openMLKEM opens a response sealed to the ML-KEM tee key; anything that
// does not open (wrong key, tampering) is an integrity failure.
func (o *Opener) openMLKEM(r *Response) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	p, err := mlkem.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("jwe for the ML-KEM tee key: %v: %w", err, spec.ErrIntegrity)
	}
	pt, err := p.Open(o.pq)
	if err != nil {
		return nil, fmt.Errorf("jwe for the ML-KEM tee key: %v: %w", err, spec.ErrIntegrity)
	}
	return pt, nil
}

type jweEPK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// Open decrypts r.
func (o *Opener) Open(r *Response) ([]byte, error) {
	if o.pq != nil {
		return o.openMLKEM(r)
	}
	hdrJSON, err := b64.DecodeString(r.Protected)
	if err != nil {
		return nil, fmt.Errorf("jwe protected header: %w", spec.ErrIntegrity)
	}
	var hdr struct {
		Alg string  `json:"alg"`
		Enc string  `json:"enc"`
		Epk *jweEPK `json:"epk"`
	}
	if err := json.Unmarshal(hdrJSON, &hdr); err != nil {
		return nil, fmt.Errorf("jwe protected header: %v: %w", err, spec.ErrIntegrity)
	}
	if hdr.Enc != ContentEncA256GCM {
		return nil, fmt.Errorf("jwe enc %q: %w", hdr.Enc, spec.ErrUnsupported)
	}
	encKey, err1 := b64.DecodeString(r.EncryptedKey)
	iv, err2 := b64.DecodeString(r.IV)
	ct, err3 := b64.DecodeString(r.Ciphertext)
	tag, err4 := b64.DecodeString(r.Tag)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || len(iv) != 12 || len(tag) != 16 {
		return nil, fmt.Errorf("jwe encoding: %w", spec.ErrIntegrity)
	}
	var cek []byte
	switch hdr.Alg {
	case KeyAlgECDHESA256KW:
		if o.ec == nil {
			return nil, fmt.Errorf("jwe alg %s needs an EC tee key: %w", hdr.Alg, spec.ErrNoKey)
		}
		kek, err := o.kek(r.Protected, hdr.Epk)
		if err != nil {
			return nil, err
		}
		if cek, err = josecipher.KeyUnwrap(kek, encKey); err != nil {
			return nil, fmt.Errorf("jwe key unwrap: %w", spec.ErrIntegrity)
		}
	case KeyAlgRSAOAEP256, KeyAlgRSA15:
		if o.dec == nil {
			return nil, fmt.Errorf("jwe alg %s needs an RSA tee key: %w", hdr.Alg, spec.ErrNoKey)
		}
		if hdr.Alg == KeyAlgRSAOAEP256 {
			cek, err = o.dec.Decrypt(rand.Reader, encKey, &rsa.OAEPOptions{Hash: crypto.SHA256})
		} else {
			cek, err = o.dec.Decrypt(rand.Reader, encKey, &rsa.PKCS1v15DecryptOptions{SessionKeyLen: 32})
		}
		if err != nil {
			return nil, fmt.Errorf("jwe key decrypt: %w", spec.ErrIntegrity)
		}
	default:
		return nil, fmt.Errorf("jwe alg %q: %w", hdr.Alg, spec.ErrUnsupported)
	}
	defer clear(cek)
	if len(cek) != 32 {
		return nil, fmt.Errorf("jwe content key length: %w", spec.ErrIntegrity)
	}
	block, _ := aes.NewCipher(cek)
	gcm, _ := cipher.NewGCM(block)
	pt, err := gcm.Open(nil, iv, append(ct, tag...), []byte(r.Protected))
	if err != nil {
		return nil, fmt.Errorf("jwe content: %w", spec.ErrIntegrity)
	}
	return pt, nil
}
