package attest

import (
	"crypto/x509"
	"sync"
	"time"

	"github.com/google/go-sev-guest/abi"
)

// checkSNPChain is verifySNPChain through the verifier's cache: a VCEK or
// VLEK whose chain (with the same ASK and ARK given in the evidence)
// verified once is not verified again while now stays inside that chain's
// validity window. The key covers everything the check reads, so a hit
// answers exactly what the check would.
func (v snpVerifier) checkSNPChain(vek *x509.Certificate, certs snpCerts, signer abi.ReportSigner, gen string, now time.Time) error {
	key := cacheKey("snp-chain", []byte{byte(signer)}, []byte(gen), vek.Raw, certs.ask, certs.ark)
	if w, ok := v.cfg.cache.get(key); ok && w.(validWindow).contains(now) {
		return nil
	}
	chain, err := verifySNPChainPath(vek, certs, signer, gen, now)
	if err != nil {
		return err
	}
	v.cfg.cache.put(key, chainWindow(chain), 64)
	return nil
}

type snpRootPair struct{ ark, ica *x509.Certificate }

var (
	snpRootsMu  sync.Mutex
	snpRootsMap = map[[2]string]snpRootPair{}
)

// snpRoots returns AMD's ARK and the ASK (VCEK) or ASVK (VLEK) of a
// processor generation, as embedded in go-sev-guest, parsed once.
func snpRoots(gen string, signer abi.ReportSigner) (ark, ica *x509.Certificate, err error) {
	k := [2]string{gen, signer.String()}
	snpRootsMu.Lock()
	defer snpRootsMu.Unlock()
	if r, ok := snpRootsMap[k]; ok {
		return r.ark, r.ica, nil
	}
	if ark, ica, err = parseSNPRoots(gen, signer); err != nil {
		return nil, nil, err
	}
	snpRootsMap[k] = snpRootPair{ark, ica}
	return ark, ica, nil
}
