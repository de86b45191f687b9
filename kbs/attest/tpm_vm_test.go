package attest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/tpm"
	"github.com/coffer-dev/coffer/tpm/tpmsim"
)

// ekCA makes a CA and an EK certificate for pub shaped like swtpm's (no
// subject, a critical SAN holding only a directoryName).
func ekCA(t *testing.T, pub any) (*x509.CertPool, []byte) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test EK CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	dirName, _ := asn1.Marshal(pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{{Type: asn1.ObjectIdentifier{2, 23, 133, 2, 1}, Value: "id:00001014"}}}.ToRDNSequence())
	san, _ := asn1.Marshal([]asn1.RawValue{{Class: 2, Tag: 4, IsCompound: true, Bytes: dirName}})
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: ca.NotBefore, NotAfter: ca.NotAfter,
		KeyUsage: x509.KeyUsageKeyEncipherment, ExtraExtensions: []pkix.Extension{{Id: oidSubjectAltName, Critical: true, Value: san}}}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, pub, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool, der
}

// Credential activation end to end with go-tpm-tools' TPM simulator:
// /auth's challenge is activated in the TPM and verifies; the secret of
// another session, another AK or an untrusted EK does not.
func TestCredentialActivation(t *testing.T) {
	ctx := context.Background()
	tp := tpmsim.New(t, 7)
	ekPub, err := tp.EKPublic(ctx)
	if err != nil {
		t.Fatal(err)
	}
	roots, ekDER := ekCA(t, ekPub)
	v := NewTPM(Config{EKRoots: roots, ActivationKey: []byte("k")}).(tpmVerifier)
	akPub, _ := tp.AKTPMPublic(ctx)
	akDER, _ := tp.AKPublic(ctx)
	extra, _ := json.Marshal(tpmAuthParams{EKCert: base64.StdEncoding.EncodeToString(ekDER), AKTPMPublic: base64.StdEncoding.EncodeToString(akPub)})

	activate := func(nonce string) []byte {
		t.Helper()
		ch, err := v.Challenge(ctx, nonce, extra)
		if err != nil {
			t.Fatal(err)
		}
		var cp tpmChallengeParams
		json.Unmarshal(ch, &cp)
		blob, _ := base64.StdEncoding.DecodeString(cp.CredentialBlob)
		sec, _ := base64.StdEncoding.DecodeString(cp.EncryptedSecret)
		s, err := tp.ActivateCredential(ctx, blob, sec)
		if err != nil {
			t.Fatalf("activate: %v", err)
		}
		return s
	}
	check := func(nonce string, secret []byte) (Claims, error) {
		te := tpmEvidence{EKCert: base64.StdEncoding.EncodeToString(ekDER), AKTPMPublic: base64.StdEncoding.EncodeToString(akPub),
			Activation: base64.StdEncoding.EncodeToString(secret)}
		c := Claims{}
		return c, v.endorsement(&te, akDER, nonce, c)
	}
	s := activate("nonce-1")
	if c, err := check("nonce-1", s); err != nil || c["ek_verified"] != true {
		t.Fatalf("activated credential: %v %v", c, err)
	}
	if _, err := check("nonce-2", s); !errors.Is(err, spec.ErrIntegrity) {
		t.Fatalf("another session's secret: %v", err)
	}
	// Another AK presented with this EK and this AK's public area: refused.
	otherKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	otherAK, _ := x509.MarshalPKIXPublicKey(&otherKey.PublicKey)
	te := tpmEvidence{EKCert: base64.StdEncoding.EncodeToString(ekDER), AKTPMPublic: base64.StdEncoding.EncodeToString(akPub), Activation: base64.StdEncoding.EncodeToString(s)}
	if err := v.endorsement(&te, otherAK, "nonce-1", Claims{}); !errors.Is(err, spec.ErrIntegrity) {
		t.Fatalf("ak_public of another TPM: %v", err)
	}
	// An EK certificate of another CA is refused at /auth.
	_, otherDER := ekCA(t, ekPub)
	bad, _ := json.Marshal(tpmAuthParams{EKCert: base64.StdEncoding.EncodeToString(otherDER), AKTPMPublic: base64.StdEncoding.EncodeToString(akPub)})
	if _, err := v.Challenge(ctx, "n", bad); !errors.Is(err, spec.ErrIntegrity) || !strings.Contains(err.Error(), "does not chain") {
		t.Fatalf("EK of another CA: %v", err)
	}
	// trustee-shaped clients: "" in, "" out.
	if ch, err := v.Challenge(ctx, "n", json.RawMessage(`""`)); err != nil || string(ch) != `""` {
		t.Fatalf("empty extra-params: %s %v", ch, err)
	}
	_ = protocol.TeeTPM
	_ = tpm.ReportDataSize
}

// The recorded guest evidence (a real SeaBIOS + swtpm + Debian 6.1 boot)
// verifies offline with boot claims; PCR 8 and the init log agree.
func TestRecordedGuestEvidence(t *testing.T) {
	raw := readTestdata(t, "vm_evidence.json")
	c, err := NewTPM(Config{}).Verify(context.Background(), Evidence{Tee: protocol.TeeTPM, Primary: raw, NoBinding: true})
	if err != nil {
		t.Fatal(err)
	}
	boot, _ := c["boot"].(map[string]any)
	if boot == nil || len(boot["init"].(string)) != 64 || len(boot["init_data"].(string)) != 64 || !strings.Contains(boot["cmdline"].(string), "ima_policy=tcb") {
		t.Fatalf("boot claims %v", boot)
	}
	if c["ek_verified"] != false {
		t.Fatalf("ek_verified = %v without EK CAs, want false", c["ek_verified"])
	}
}
