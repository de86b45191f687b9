package pemcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(1), NotAfter: time.Now().Add(time.Hour)}, &x509.Certificate{SerialNumber: big.NewInt(1)}, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	key := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("x")})
	two := append(append(append([]byte{}, cert...), key...), cert...)
	if cs, err := Parse(two, 0); err != nil || len(cs) != 2 {
		t.Errorf("two certificates and a key: %d, %v", len(cs), err)
	}
	if _, err := Parse(two, 1); err == nil || !strings.Contains(err.Error(), "more than 1") {
		t.Errorf("max 1: %v", err)
	}
	if cs, err := Parse(key, 0); err != nil || len(cs) != 0 {
		t.Errorf("no certificate: %d, %v", len(cs), err)
	}
	bad := append(append([]byte{}, cert...), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")})...)
	if _, err := Parse(bad, 0); err == nil || !strings.Contains(err.Error(), "certificate 2") {
		t.Errorf("malformed second: %v", err)
	}
}
