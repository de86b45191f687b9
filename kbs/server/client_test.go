package server_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"

	"github.com/coffer-dev/coffer/kbs/attest"
	"github.com/coffer-dev/coffer/kbs/protocol"
)

// rcar is a minimal RCAR client built on kbs/protocol, for driving the
// broker in tests.
type rcar struct {
	t    testing.TB
	base string
	hc   *http.Client
	priv crypto.PrivateKey
	pub  protocol.TeePubKey
}

func newRCAR(t testing.TB, base string) *rcar {
	priv, pub, err := protocol.GenerateTeeKey()
	if err != nil {
		t.Fatal(err)
	}
	return newRCARWithKey(t, base, priv, pub)
}

func newRCARWithKey(t testing.TB, base string, priv crypto.PrivateKey, pub protocol.TeePubKey) *rcar {
	jar, _ := cookiejar.New(nil)
	return &rcar{t: t, base: base, hc: &http.Client{Jar: jar}, priv: priv, pub: pub}
}

func rsaTeeKey(t testing.TB) (crypto.PrivateKey, protocol.TeePubKey) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := protocol.PublicTeeKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return k, pub
}

func p521TeeKey(t testing.TB) (crypto.PrivateKey, protocol.TeePubKey) {
	k, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	pub, err := protocol.PublicTeeKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return k, pub
}

type reply struct {
	code int
	body []byte
	hdr  http.Header
}

// errInfo decodes the error body.
func (r reply) errInfo(t testing.TB) protocol.ErrorInfo {
	t.Helper()
	var e protocol.ErrorInfo
	if err := json.Unmarshal(r.body, &e); err != nil || !strings.HasPrefix(e.Type, protocol.ErrorTypePrefix) {
		t.Fatalf("error body %q is not {type,detail}: %v", r.body, err)
	}
	return e
}

func (c *rcar) do(method, path string, body []byte, hdr map[string]string) reply {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, bytes.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", protocol.ContentTypeJSON)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, b, resp.Header}
}

func (c *rcar) auth(tee protocol.Tee) (protocol.Challenge, reply) {
	c.t.Helper()
	body, _ := json.Marshal(protocol.Request{Version: protocol.Version, Tee: tee, ExtraParams: json.RawMessage(`""`)})
	r := c.do(http.MethodPost, protocol.PathAuth, body, nil)
	var ch protocol.Challenge
	if r.code == http.StatusOK {
		if err := json.Unmarshal(r.body, &ch); err != nil {
			c.t.Fatal(err)
		}
	}
	return ch, r
}

// attestation builds the sample attestation for nonce; the evidence binds
// boundTo (normally c.pub) while runtime-data carries c.pub.
func (c *rcar) attestation(nonce string, boundTo protocol.TeePubKey) protocol.Attestation {
	c.t.Helper()
	d, err := protocol.ReportDataDigest(nonce, boundTo, "")
	if err != nil {
		c.t.Fatal(err)
	}
	return protocol.Attestation{
		RuntimeData: protocol.RuntimeData{Nonce: nonce, TeePubKey: c.pub},
		TeeEvidence: protocol.CompositeEvidence{PrimaryEvidence: attest.SampleEvidence("1", d), AdditionalEvidence: ""},
	}
}

func (c *rcar) attest(a protocol.Attestation) (string, reply) {
	c.t.Helper()
	body, _ := json.Marshal(a)
	r := c.do(http.MethodPost, protocol.PathAttest, body, nil)
	var ar protocol.AttestResponse
	if r.code == http.StatusOK {
		if err := json.Unmarshal(r.body, &ar); err != nil {
			c.t.Fatal(err)
		}
	}
	return ar.Token, r
}

// handshake runs auth + attest with the sample TEE and returns the token.
func (c *rcar) handshake() string {
	c.t.Helper()
	ch, r := c.auth(protocol.TeeSample)
	if r.code != http.StatusOK {
		c.t.Fatalf("auth: %d %s", r.code, r.body)
	}
	tok, r := c.attest(c.attestation(ch.Nonce, c.pub))
	if r.code != http.StatusOK {
		c.t.Fatalf("attest: %d %s", r.code, r.body)
	}
	return tok
}

// get fetches a resource (bearer token if not "") and opens it.
func (c *rcar) get(path, bearer string) ([]byte, *protocol.Response, reply) {
	c.t.Helper()
	hdr := map[string]string{}
	if bearer != "" {
		hdr["Authorization"] = "Bearer " + bearer
	}
	r := c.do(http.MethodGet, protocol.PathResource+path, nil, hdr)
	if r.code != http.StatusOK {
		return nil, nil, r
	}
	var resp protocol.Response
	if err := json.Unmarshal(r.body, &resp); err != nil {
		c.t.Fatal(err)
	}
	pt, err := protocol.Open(c.priv, &resp)
	if err != nil {
		c.t.Fatalf("opening resource: %v", err)
	}
	return pt, &resp, r
}
