package tpm_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"testing"

	"github.com/coffer-dev/coffer/kbs/attest"
	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/tpm"
	"github.com/coffer-dev/coffer/tpm/tpmsim"
)

type host struct {
	ak  string
	bk  *tpm.BindingKey
	tpm *tpm.TPM
}

// The binding key is certified by the AK, verifies with the broker's
// checker, and only its own TPM unwraps what is wrapped to it.
func TestBindingKey(t *testing.T) {
	ctx := t.Context()
	qd := bytes.Repeat([]byte{7}, 32)
	mk := func(seed int64) host {
		tp := tpmsim.New(t, seed)
		bk, err := tp.CertifyBindingKey(ctx, qd)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := tp.BindingPublic(ctx)
		if err != nil || pub.N.Cmp(bk.Key.N) != 0 {
			t.Fatalf("BindingPublic = %v, %v; want the certified key", pub, err)
		}
		return host{ak: base64.StdEncoding.EncodeToString(akPublic(t, tp)), bk: bk, tpm: tp}
	}
	a := mk(1)
	key := []byte("0123456789abcdef0123456789abcdef")
	wrapped, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, a.bk.Key, key, []byte(protocol.TPMOAEPLabel))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := a.tpm.Unbind(ctx, wrapped); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("Unbind on the own TPM = %q, %v; want the key", got, err)
	}
	k, err := attest.VerifyTPMBindingKey(a.ak, a.bk.Public, a.bk.CertifyInfo, a.bk.Signature, qd)
	if err != nil || k.N.Cmp(a.bk.Key.N) != 0 {
		t.Fatalf("VerifyTPMBindingKey = %v; want the binding key", err)
	}
	a.tpm.Close() // the simulator holds one TPM at a time
	b := mk(2)
	if bytes.Equal(a.bk.Public, b.bk.Public) {
		t.Fatal("two TPMs derived the same binding key")
	}
	if _, err := b.tpm.Unbind(ctx, wrapped); !errors.Is(err, spec.ErrNoKey) {
		t.Errorf("Unbind of A's key on B = %v, want ErrNoKey", err)
	}
	for _, tc := range []struct {
		name              string
		ak                string
		pub, info, sig, q []byte
	}{
		{"certified by another AK", b.ak, a.bk.Public, a.bk.CertifyInfo, a.bk.Signature, qd},
		{"another key than certified", a.ak, b.bk.Public, a.bk.CertifyInfo, a.bk.Signature, qd},
		{"other qualifying data (replay)", a.ak, a.bk.Public, a.bk.CertifyInfo, a.bk.Signature, bytes.Repeat([]byte{8}, 32)},
		{"certify info changed", a.ak, a.bk.Public, flip(a.bk.CertifyInfo, 40), a.bk.Signature, qd},
	} {
		if _, err := attest.VerifyTPMBindingKey(tc.ak, tc.pub, tc.info, tc.sig, tc.q); !errors.Is(err, spec.ErrIntegrity) && !errors.Is(err, spec.ErrUnsupported) {
			t.Errorf("%s: err = %v, want a refusal", tc.name, err)
		}
	}
}

func flip(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 1
	return c
}
