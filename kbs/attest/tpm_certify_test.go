package attest

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/coffer-dev/coffer/internal/fuzzbound"
	"github.com/coffer-dev/coffer/spec"
)

// A software "AK" signs hand-built TPM structures, so the checks on the
// binding key's shape can be exercised one attribute at a time.
type certFixture struct {
	ak    *rsa.PrivateKey
	akB64 string
	bind  *rsa.PrivateKey
	extra []byte
}

func newCertFixture(t testing.TB) *certFixture {
	ak, _ := rsa.GenerateKey(rand.Reader, 2048)
	bind, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKIXPublicKey(&ak.PublicKey)
	return &certFixture{ak: ak, akB64: base64.StdEncoding.EncodeToString(der), bind: bind, extra: bytes.Repeat([]byte{9}, 32)}
}

func u16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func b2(b []byte) []byte  { return append(u16(uint16(len(b))), b...) }

func bindingPublic(attrs uint32, scheme uint16, n []byte) []byte {
	var b []byte
	b = append(b, u16(tpmAlgRSA)...)
	b = append(b, u16(tpmAlgSHA256)...)
	b = append(b, u32(attrs)...)
	b = append(b, b2(nil)...)         // authPolicy
	b = append(b, u16(tpmAlgNull)...) // symmetric
	b = append(b, u16(scheme)...)     // scheme
	if scheme != tpmAlgNull {
		b = append(b, u16(tpmAlgSHA256)...)
	}
	b = append(b, u16(uint16(8*len(n)))...) // keyBits
	b = append(b, u32(0)...)                // exponent 65537
	return append(b, b2(n)...)
}

func certifyInfo(public, extra []byte) []byte {
	sum := sha256.Sum256(public)
	name := append(u16(tpmAlgSHA256), sum[:]...)
	var b []byte
	b = append(b, u32(tpmGeneratedValue)...)
	b = append(b, u16(tpmSTAttestCertify)...)
	b = append(b, b2(make([]byte, 34))...) // qualifiedSigner
	b = append(b, b2(extra)...)
	b = append(b, make([]byte, 17+8)...) // clockInfo, firmwareVersion
	b = append(b, b2(name)...)
	return append(b, b2(name)...) // qualifiedName (not checked)
}

func (f *certFixture) sign(msg []byte) []byte {
	d := sha256.Sum256(msg)
	s, _ := rsa.SignPKCS1v15(rand.Reader, f.ak, crypto.SHA256, d[:])
	return append(append(u16(tpmAlgRSASSA), u16(tpmAlgSHA256)...), b2(s)...)
}

const goodAttrs = tpmAttrFixedTPM | tpmAttrFixedParent | tpmAttrSensitiveDataOrigin | tpmAttrDecrypt | 1<<6

func TestVerifyTPMBindingKeyShape(t *testing.T) {
	t.Parallel()
	f := newCertFixture(t)
	n := f.bind.N.Bytes()
	for _, tc := range []struct {
		name    string
		attrs   uint32
		scheme  uint16
		wantErr error
	}{
		{"binding key", goodAttrs, tpmAlgOAEP, nil},
		{"null scheme", goodAttrs, tpmAlgNull, nil},
		{"also signs", goodAttrs | tpmAttrSign, tpmAlgNull, spec.ErrUnsupported},
		{"restricted", goodAttrs | tpmAttrRestricted, tpmAlgNull, spec.ErrUnsupported},
		{"migratable (no fixedTPM)", goodAttrs &^ tpmAttrFixedTPM, tpmAlgNull, spec.ErrUnsupported},
		{"duplicable (no fixedParent)", goodAttrs &^ tpmAttrFixedParent, tpmAlgNull, spec.ErrUnsupported},
		{"imported (no sensitiveDataOrigin)", goodAttrs &^ tpmAttrSensitiveDataOrigin, tpmAlgNull, spec.ErrUnsupported},
		{"RSASSA scheme", goodAttrs, tpmAlgRSASSA, spec.ErrUnsupported},
	} {
		pub := bindingPublic(tc.attrs, tc.scheme, n)
		info := certifyInfo(pub, f.extra)
		k, err := VerifyTPMBindingKey(f.akB64, pub, info, f.sign(info), f.extra)
		if tc.wantErr == nil && (err != nil || k.N.Cmp(f.bind.N) != 0) || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.wantErr)
		}
	}
}

// FuzzVerifyTPMBindingKey: whatever is accepted is the key the
// certification names, with the qualifying data asked for, signed by the AK.
func FuzzVerifyTPMBindingKey(fz *testing.F) {
	f := newCertFixture(fz)
	pub := bindingPublic(goodAttrs, tpmAlgOAEP, f.bind.N.Bytes())
	info := certifyInfo(pub, f.extra)
	fz.Add(pub, info, f.sign(info))
	fz.Fuzz(func(t *testing.T, pub, info, sig []byte) {
		fuzzbound.Limit(t, fuzzbound.Default)
		k, err := VerifyTPMBindingKey(f.akB64, pub, info, sig, f.extra)
		if err != nil {
			return
		}
		d := sha256.Sum256(info)
		if rsa.VerifyPKCS1v15(&f.ak.PublicKey, crypto.SHA256, d[:], sig[6:]) != nil {
			t.Fatal("accepted a certification the AK did not sign")
		}
		sum := sha256.Sum256(pub)
		if !bytes.Contains(info, sum[:]) || !bytes.Contains(info, f.extra) {
			t.Fatal("accepted a certification of another key or qualifying data")
		}
		if !bytes.HasSuffix(pub, k.N.Bytes()) {
			t.Fatal("returned a key that is not the public area's modulus")
		}
	})
}
