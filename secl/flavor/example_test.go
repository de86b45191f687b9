package flavor_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/coffer-dev/coffer/secl/flavor"
	"github.com/coffer-dev/coffer/spec"
)

// Sign a flavor with the owner's key; a workload service that trusts the
// owner's certificate verifies it, and refuses it once a byte changed.
func Example() {
	key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "owner"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	cert, _ := x509.ParseCertificate(der)

	digest := sha512.Sum384([]byte("the encrypted disk image"))
	f, _ := flavor.New(flavor.PartImage, "cirros",
		"https://kbs.example/kbs/v1/keys/2b7a3e1c-6a2e-4b8e-9c1f-0d4f5e6a7b8c/transfer",
		base64.StdEncoding.EncodeToString(digest[:]))
	doc, _ := flavor.Sign(f, key)

	got, err := flavor.Verify(doc, []*x509.Certificate{cert})
	fmt.Println(got.Meta.Description.Label, got.EncryptionRequired, err)

	tampered := strings.Replace(string(doc), "cirros", "cirrus", 1)
	_, err = flavor.Verify([]byte(tampered), []*x509.Certificate{cert})
	fmt.Println(errors.Is(err, spec.ErrIntegrity))
	// Output:
	// cirros true <nil>
	// true
}
