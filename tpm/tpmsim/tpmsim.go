// Package tpmsim gives tests an in-process TPM 2.0: go-tpm-tools'
// simulator (Microsoft's reference TPM), which needs cgo and OpenSSL's
// libcrypto (Debian: gcc, libssl-dev). Without cgo the tests using it skip.
package tpmsim

import (
	"testing"

	"github.com/google/go-tpm-tools/simulator"

	"github.com/coffer-dev/coffer/tpm"
)

// New returns a freshly manufactured simulated TPM whose seeds derive
// from seed, so the same seed yields the same AK, closed by t.Cleanup. The
// simulator is one per process: a second call waits until the first TPM is
// closed, so a test holds one at a time (and tests using it do not run in
// parallel). Without cgo the test is skipped.
func New(t testing.TB, seed int64, opts ...tpm.Option) *tpm.TPM {
	t.Helper()
	s, err := simulator.GetWithFixedSeedInsecure(seed)
	if err != nil {
		t.Skipf("skipping: the in-process TPM simulator is unavailable (it needs cgo): %v", err)
	}
	tp, err := tpm.New(s, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	return tp
}
