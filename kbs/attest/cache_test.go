package attest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/spec"
)

func TestCheckCacheBoundedLRU(t *testing.T) {
	t.Parallel()
	c := newCheckCache(10 * (cacheEntryOverhead + 100))
	key := func(i int) [32]byte { return cacheKey("t", []byte{byte(i)}) }
	for i := range 20 {
		c.put(key(i), i, 100)
		if c.bytes() > c.max {
			t.Fatalf("after %d puts: %d bytes cached, bound %d", i+1, c.bytes(), c.max)
		}
		if i == 10 {
			c.get(key(1)) // recently used: survives the next eviction
		}
	}
	if _, ok := c.get(key(0)); ok {
		t.Error("the least recently used entry was not evicted")
	}
	if v, ok := c.get(key(19)); !ok || v != 19 {
		t.Errorf("latest entry: %v %v", v, ok)
	}
	c.put(key(99), "huge", c.max) // larger than the whole cache: not kept
	if _, ok := c.get(key(99)); ok {
		t.Error("an entry larger than the bound was kept")
	}
	if cacheKey("a", []byte("bc")) == cacheKey("ab", []byte("c")) {
		t.Error("cache keys collide by concatenation")
	}
	var nilCache *checkCache
	nilCache.put(key(1), 1, 1)
	if _, ok := nilCache.get(key(1)); ok {
		t.Error("a nil cache cached")
	}
}

// A warm SNP verifier skips only the chain check it already made, and only
// while the chain is valid: the report's own signature and binding are
// checked every time, and a clock past the VCEK's notAfter is refused.
func TestSNPCacheKeepsChecking(t *testing.T) {
	t.Parallel()
	raw := readTestdata(t, "snp/trustee-e2e-evidence.json")
	rd := mustHex(t, "7e7320889600c7ac133aea7b896c51f41026002982292a7369559796999c1bf929eef3ff23c46e858f0b1982f9a92b17c51b578d958cde6b0c92978f150cf9b0")
	var now atomic.Pointer[time.Time]
	at := snpAt
	now.Store(&at)
	v := NewSNP(Config{Now: func() time.Time { return *now.Load() }})
	ev := Evidence{Tee: protocol.TeeSNP, Primary: raw, ReportData: rd}
	if _, err := v.Verify(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	if v.(snpVerifier).cfg.cache.bytes() == 0 {
		t.Fatal("nothing cached after a verification")
	}
	if _, err := v.Verify(context.Background(), ev); err != nil {
		t.Fatalf("warm: %v", err)
	}
	other := append([]byte(nil), rd...)
	other[0] ^= 1
	if _, err := v.Verify(context.Background(), Evidence{Tee: protocol.TeeSNP, Primary: raw, ReportData: other}); !errors.Is(err, spec.ErrIntegrity) {
		t.Errorf("warm, another nonce: %v, want ErrIntegrity", err)
	}
	later := time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC)
	now.Store(&later)
	if _, err := v.Verify(context.Background(), ev); !errors.Is(err, spec.ErrIntegrity) {
		t.Errorf("warm, after the chain expired: %v, want ErrIntegrity", err)
	}
}

// A warm TDX verifier reads a collateral file again once it changed: an
// operator's replacement (here a broken QE identity) is seen at once.
func TestTDXCollateralCacheSeesChanges(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "tdx"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"tcbinfo-50806f000000.json", "tcbinfo-50806f000000.issuer-chain.pem", "qe-identity.json", "qe-identity.issuer-chain.pem"} {
		if err := os.WriteFile(filepath.Join(dir, "tdx", f), readTestdata(t, "tdx/"+f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	quote := readTestdata(t, "tdx/trustee-tdx-quote-4.dat")
	v := NewTDX(Config{Now: atTime(tdxAt), Collateral: dir, AllowDebug: true})
	ev := Evidence{Tee: protocol.TeeTDX, Primary: tdxEvidence(quote), NoBinding: true}
	for range 2 {
		if _, err := v.Verify(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	qe := filepath.Join(dir, "tdx", "qe-identity.json")
	broken := []byte(`{"enclaveIdentity": {}, "signature": "00"}`)
	if err := os.WriteFile(qe, broken, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), ev); !errors.Is(err, spec.ErrIntegrity) {
		t.Errorf("after the QE identity was replaced by a broken one: %v, want ErrIntegrity", err)
	}
}
