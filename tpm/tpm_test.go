package tpm_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"

	"github.com/coffer-dev/coffer/spec"
	"github.com/coffer-dev/coffer/tpm"
	"github.com/coffer-dev/coffer/tpm/tpmsim"
	"github.com/coffer-dev/coffer/tpm/tpmtest"
)

func akPublic(t *testing.T, tp *tpm.TPM) []byte {
	t.Helper()
	der, err := tp.AKPublic(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// The AK is a primary key: the same TPM gives the same AK, another TPM
// (another endorsement seed) another one.
func TestAKStable(t *testing.T) {
	tp := tpmsim.New(t, 1)
	a1 := akPublic(t, tp)
	tp.Close()
	tp = tpmsim.New(t, 1)
	if a2 := akPublic(t, tp); !bytes.Equal(a1, a2) {
		t.Error("the AK changed between two opens of the same TPM")
	}
	tp.Close()
	tp = tpmsim.New(t, 2)
	if a3 := akPublic(t, tp); bytes.Equal(a1, a3) {
		t.Error("two TPMs have the same AK")
	}
	pub, err := x509.ParsePKIXPublicKey(a1)
	if k, ok := pub.(*rsa.PublicKey); err != nil || !ok || k.N.BitLen() != 2048 {
		t.Errorf("AK = %T, %v; want RSA-2048", pub, err)
	}
}

func TestQuote(t *testing.T) {
	tp := tpmsim.New(t, 1)
	ctx := t.Context()
	rd := bytes.Repeat([]byte{0xAB}, 48) // a SHA-384 report data digest: truncated to 32
	initdata := sha256.Sum256([]byte("version = \"0.1.0\"\n"))
	if err := tp.ExtendPCR(ctx, tpm.InitDataPCR, initdata[:]); err != nil {
		t.Fatal(err)
	}
	ev, err := tp.Quote(ctx, rd)
	if err != nil {
		t.Fatal(err)
	}
	if ev.AKPublic != base64.StdEncoding.EncodeToString(akPublic(t, tp)) {
		t.Error("ak_public is not the AK")
	}
	if len(ev.Quote.PCRs) != tpm.NumPCRs {
		t.Fatalf("%d PCRs, want %d", len(ev.Quote.PCRs), tpm.NumPCRs)
	}
	want8 := sha256.Sum256(append(make([]byte, 32), initdata[:]...))
	if got, want := ev.Quote.PCRs[8], hex.EncodeToString(want8[:]); got != want {
		t.Errorf("pcrs[8] = %s, want %s", got, want)
	}
	pcrs, err := tp.ReadPCRs(ctx)
	if err != nil || hex.EncodeToString(pcrs[8]) != ev.Quote.PCRs[8] {
		t.Errorf("ReadPCRs: %x, %v", pcrs[8], err)
	}

	msg, _ := base64.StdEncoding.DecodeString(ev.Quote.Message)
	ad, err := tpm2.DecodeAttestationData(msg)
	if err != nil || ad.AttestedQuoteInfo == nil {
		t.Fatalf("message is not a quote: %v", err)
	}
	if !bytes.Equal(ad.ExtraData, rd[:32]) {
		t.Errorf("qualifying data = %x, want the report data's first 32 bytes", ad.ExtraData)
	}
	sel := ad.AttestedQuoteInfo.PCRSelection
	if sel.Hash != tpm2.AlgSHA256 || len(sel.PCRs) != 24 {
		t.Errorf("quoted selection = %+v, want sha256:0-23", sel)
	}
	// The signature (a marshalled TPMT_SIGNATURE, RSASSA-SHA256) verifies.
	raw, _ := base64.StdEncoding.DecodeString(ev.Quote.Signature)
	sig, err := tpm2.DecodeSignature(bytes.NewBuffer(raw))
	if err != nil || sig.RSA == nil || sig.Alg != tpm2.AlgRSASSA || sig.RSA.HashAlg != tpm2.AlgSHA256 {
		t.Fatalf("signature: %+v %v", sig, err)
	}
	pub, _ := x509.ParsePKIXPublicKey(akPublic(t, tp))
	digest := sha256.Sum256(msg)
	if err := rsa.VerifyPKCS1v15(pub.(*rsa.PublicKey), crypto.SHA256, digest[:], sig.RSA.Signature); err != nil {
		t.Errorf("quote signature: %v", err)
	}

	// Short report data is zero-padded.
	ev, err = tp.Quote(ctx, []byte{1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	msg, _ = base64.StdEncoding.DecodeString(ev.Quote.Message)
	ad, _ = tpm2.DecodeAttestationData(msg)
	if want := append([]byte{1, 2, 3}, make([]byte, 29)...); !bytes.Equal(ad.ExtraData, want) {
		t.Errorf("qualifying data = %x, want %x", ad.ExtraData, want)
	}
}

func TestExtendPCRBounds(t *testing.T) {
	tp := tpmsim.New(t, 1)
	for _, tc := range []struct {
		index  int
		digest []byte
	}{{24, make([]byte, 32)}, {-1, make([]byte, 32)}, {8, make([]byte, 48)}} {
		if err := tp.ExtendPCR(t.Context(), tc.index, tc.digest); !errors.Is(err, spec.ErrUnsupported) {
			t.Errorf("ExtendPCR(%d, %d bytes) = %v, want ErrUnsupported", tc.index, len(tc.digest), err)
		}
	}
}

// An AK provisioned at CoCo's handle is the one used (here an ECC one,
// quoting with ECDSA); WithAKHandle names one explicitly.
func TestPersistentAK(t *testing.T) {
	s, err := simulator.GetWithFixedSeedInsecure(3)
	if err != nil {
		t.Skipf("skipping: simulator unavailable: %v", err)
	}
	k, err := client.NewCachedKey(s, tpm2.HandleOwner, client.AKTemplateECC(), tpmutil.Handle(tpm.CoCoAKHandle))
	if err != nil {
		s.Close()
		t.Fatal(err)
	}
	want, _ := x509.MarshalPKIXPublicKey(k.PublicKey())
	tp, err := tpm.New(s)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	if got := akPublic(t, tp); !bytes.Equal(got, want) {
		t.Fatal("the AK at CoCo's handle was not used")
	}
	ev, err := tp.Quote(t.Context(), []byte("nonce"))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(ev.Quote.Signature)
	sig, err := tpm2.DecodeSignature(bytes.NewBuffer(raw))
	if err != nil || sig.ECC == nil {
		t.Fatalf("signature %+v, %v; want ECDSA", sig, err)
	}
	msg, _ := base64.StdEncoding.DecodeString(ev.Quote.Message)
	d := sha256.Sum256(msg)
	if !ecdsa.Verify(k.PublicKey().(*ecdsa.PublicKey), d[:], sig.ECC.R, sig.ECC.S) {
		t.Error("ECDSA quote signature does not verify")
	}
	// The endorsement AK is another key; an empty handle is an error.
	for _, tc := range []struct {
		h    uint32
		want bool
	}{{tpm.CoCoAKHandle, true}, {0x81000099, false}} {
		t2, err := tpm.New(nopCloser{s}, tpm.WithAKHandle(tc.h))
		if err != nil {
			t.Fatal(err)
		}
		_, err = t2.AKPublic(t.Context())
		if (err == nil) != tc.want {
			t.Errorf("WithAKHandle(%#x): err = %v", tc.h, err)
		}
		t2.Close()
	}
	if _, err := tpm.New(nopCloser{s}, tpm.WithAKHandle(0x80000001)); !errors.Is(err, spec.ErrUnsupported) {
		t.Errorf("transient handle accepted: %v", err)
	}
}

type nopCloser struct{ *simulator.Simulator }

func (nopCloser) Close() error { return nil }

func TestCheckAddr(t *testing.T) {
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"", true}, {"/dev/tpmrm0", true}, {"tcp://127.0.0.1:2321", true}, {"tcp://[::1]:2321", true},
		{"tcp://127.0.0.1", false}, {"tcp://h:1/x", false}, {"dev/tpm0", false}, {"unix:///run/tpm", false},
	} {
		if err := tpm.CheckAddr(tc.addr); (err == nil) != tc.ok {
			t.Errorf("CheckAddr(%q) = %v", tc.addr, err)
		}
	}
}

// Against swtpm's TCP socket: the AK is stable across connections, a
// client that vanished without flushing its objects does not exhaust the
// TPM's object slots, and a cancelled context ends a command.
func TestSwtpm(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	ctx := t.Context()
	open := func() *tpm.TPM {
		t.Helper()
		tp, err := tpm.Open(ctx, sw.Addr)
		if err != nil {
			t.Fatal(err)
		}
		return tp
	}
	tp := open()
	ak := akPublic(t, tp)
	ev, err := tp.Quote(ctx, []byte("report data"))
	if err != nil || ev.AKPublic != base64.StdEncoding.EncodeToString(ak) {
		t.Fatalf("quote: %v", err)
	}
	tp.Close()
	// Clients that drop the connection with a key loaded, until the TPM's
	// object slots are full (swtpm has three).
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", strings.TrimPrefix(sw.Addr, "tcp://"))
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = tpm2.CreatePrimary(c, tpm2.HandleEndorsement, tpm2.PCRSelection{}, "", "", client.AKTemplateRSA())
		c.Close()
		if err != nil {
			if i < 3 {
				t.Fatalf("create primary %d on a raw connection: %v", i, err)
			}
			break
		}
		if i > 10 {
			t.Fatal("the TPM has room for more than 10 transient objects?")
		}
	}
	tp = open()
	defer tp.Close()
	if got := akPublic(t, tp); !bytes.Equal(got, ak) {
		t.Error("the AK changed between connections")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := tp.Quote(cctx, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("quote with a cancelled context: %v", err)
	}
	dctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := tp.Quote(dctx, nil); err != nil {
		t.Errorf("quote after a cancelled one: %v", err)
	}
	if _, err := tpm.Open(ctx, "tcp://127.0.0.1:1"); err == nil {
		t.Error("Open of a closed port succeeded")
	}
}

// A socket TPM that never answers: the context's deadline ends the wait.
func TestHungSocket(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(io.Discard, c) // reads commands, answers none
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := tpm.Open(ctx, "tcp://"+l.Addr().String()); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Open of a silent socket: %v, want the deadline", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Open took %v", d)
	}
}
