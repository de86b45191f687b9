package keys_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/elliptic"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"hash"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/keywrap/keys"
	"github.com/coffer-dev/coffer/keywrap/keys/keystest"
	"github.com/coffer-dev/coffer/spec"
)

// pbes2Encrypt builds an EncryptedPrivateKeyInfo as RFC 8018 describes it,
// independently of the parser, so the test needs no openssl.
type pbes2Opts struct {
	schemeOID, kdfOID, prfOID, cipherOID asn1.ObjectIdentifier
	prf                                  func() hash.Hash
	keyLen, iter                         int
	encIter                              int // written instead of iter when set
	des                                  bool
	badPadding                           bool
}

func pbes2Encrypt(t *testing.T, plain, password []byte, o pbes2Opts) []byte {
	t.Helper()
	salt := make([]byte, 16)
	_, _ = rand.Read(salt)
	key, err := pbkdf2.Key(o.prf, string(password), salt, o.iter, o.keyLen)
	if err != nil {
		t.Fatal(err)
	}
	var block cipher.Block
	if o.des {
		block, err = des.NewTripleDESCipher(key)
	} else {
		block, err = aes.NewCipher(key)
	}
	if err != nil {
		t.Fatal(err)
	}
	bs := block.BlockSize()
	iv := make([]byte, bs)
	_, _ = rand.Read(iv)
	n := bs - len(plain)%bs
	padded := append(bytes.Clone(plain), bytes.Repeat([]byte{byte(n)}, n)...)
	if o.badPadding {
		padded[len(padded)-1] = byte(bs + 1)
	}
	ct := make([]byte, len(padded))
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(ct, padded)

	wIter := o.iter
	if o.encIter != 0 {
		wIter = o.encIter
	}
	mustRaw := func(v any) asn1.RawValue {
		b, err := asn1.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return asn1.RawValue{FullBytes: b}
	}
	// PBKDF2-params: salt, iterationCount, [keyLength], [prf]. Field order matters.
	type kdfWithPRF struct {
		Salt []byte
		Iter int
		PRF  pkix.AlgorithmIdentifier
	}
	var kdf asn1.RawValue
	if o.prfOID == nil {
		kdf = mustRaw(struct {
			Salt []byte
			Iter int
		}{salt, wIter})
	} else {
		kdf = mustRaw(kdfWithPRF{salt, wIter, pkix.AlgorithmIdentifier{Algorithm: o.prfOID, Parameters: asn1.NullRawValue}})
	}
	params := mustRaw(struct {
		KDF    pkix.AlgorithmIdentifier
		Scheme pkix.AlgorithmIdentifier
	}{
		pkix.AlgorithmIdentifier{Algorithm: o.kdfOID, Parameters: kdf},
		pkix.AlgorithmIdentifier{Algorithm: o.cipherOID, Parameters: mustRaw(iv)},
	})
	out, err := asn1.Marshal(struct {
		Alg  pkix.AlgorithmIdentifier
		Data []byte
	}{pkix.AlgorithmIdentifier{Algorithm: o.schemeOID, Parameters: params}, ct})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var (
	oidPBES2   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	oidPBES1   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 3}
	oidPBKDF2  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}
	oidHMAC256 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}
	oidHMACMD5 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 6}
	oidAES256  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
	oidAES128  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	oidDES3    = asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 7}
	oidCamelia = asn1.ObjectIdentifier{1, 2, 392, 200011, 61, 1, 1, 1, 4}
)

func TestPBES2WithoutOpenSSL(t *testing.T) {
	ek := keystest.EC(t, elliptic.P256())
	plain := keystest.PKCS8(t, ek)
	pw := []byte("go pw")
	good := pbes2Opts{schemeOID: oidPBES2, kdfOID: oidPBKDF2, prfOID: oidHMAC256, cipherOID: oidAES256, prf: sha256.New, keyLen: 32, iter: 2048}

	variants := map[string]pbes2Opts{
		"aes256 sha256":           good,
		"aes128 default sha1 prf": {schemeOID: oidPBES2, kdfOID: oidPBKDF2, cipherOID: oidAES128, prf: sha1.New, keyLen: 16, iter: 1000},
		"des3 sha256":             {schemeOID: oidPBES2, kdfOID: oidPBKDF2, prfOID: oidHMAC256, cipherOID: oidDES3, prf: sha256.New, keyLen: 24, iter: 10, des: true},
	}
	for name, o := range variants {
		t.Run(name, func(t *testing.T) {
			der := pbes2Encrypt(t, plain, pw, o)
			for form, data := range map[string][]byte{"der": der, "pem": keystest.PEM("ENCRYPTED PRIVATE KEY", der)} {
				m, err := keys.ParseMaterial("k", data, pw)
				if err != nil {
					t.Fatalf("%s: %v", form, err)
				}
				if !m.Private.(equaler).Equal(ek) {
					t.Fatalf("%s: decrypted key differs", form)
				}
				if _, err := keys.ParseMaterial("k", data, []byte("other")); !errors.Is(err, keys.ErrWrongPassword) {
					t.Errorf("%s wrong password: got %v", form, err)
				}
			}
		})
	}

	bad := []struct {
		name string
		mod  func(*pbes2Opts)
		want error
		msg  string
	}{
		{"pbes1 scheme", func(o *pbes2Opts) { o.schemeOID = oidPBES1 }, spec.ErrUnsupported, "only PBES2"},
		{"unknown kdf", func(o *pbes2Opts) { o.kdfOID = oidHMAC256 }, spec.ErrUnsupported, "only PBKDF2"},
		{"md5 prf", func(o *pbes2Opts) { o.prfOID = oidHMACMD5 }, spec.ErrUnsupported, "PRF"},
		{"camellia", func(o *pbes2Opts) { o.cipherOID = oidCamelia }, spec.ErrUnsupported, "cipher"},
		{"iteration count too high", func(o *pbes2Opts) { o.iter, o.encIter = 1, 20_000_001 }, nil, "iteration count 20000001 out of range"},
		{"bad padding is a wrong password", func(o *pbes2Opts) { o.badPadding = true }, keys.ErrWrongPassword, "wrong password for key file k"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			o := good
			tc.mod(&o)
			_, err := keys.ParseMaterial("k", pbes2Encrypt(t, plain, pw, o), pw)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v containing %q", err, tc.want, tc.msg)
			}
		})
	}
}

func TestEncryptedPKCS8UnsupportedAlgorithm(t *testing.T) {
	inner, err := asn1.Marshal(struct {
		Version int
		Alg     pkix.AlgorithmIdentifier
		Key     []byte
	}{0, pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 10040, 4, 1}}, []byte{2, 1, 5}})
	if err != nil {
		t.Fatal(err)
	}
	o := pbes2Opts{schemeOID: oidPBES2, kdfOID: oidPBKDF2, prfOID: oidHMAC256, cipherOID: oidAES256, prf: sha256.New, keyLen: 32, iter: 100}
	der := pbes2Encrypt(t, inner, []byte("pw"), o)
	_, err = keys.ParseMaterial("dsa.p8", keystest.PEM("ENCRYPTED PRIVATE KEY", der), []byte("pw"))
	if !errors.Is(err, spec.ErrUnsupported) || errors.Is(err, keys.ErrWrongPassword) {
		t.Fatalf("got %v, want ErrUnsupported (not a wrong password)", err)
	}
	if got, want := err.Error(), "dsa.p8: private key algorithm 1.2.840.10040.4.1 is not supported (need RSA or EC)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
