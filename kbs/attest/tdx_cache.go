package attest

import (
	"os"
	"strconv"
	"sync"
)

// intelSGXRoots is Intel's SGX Root CA (embedded), parsed once; the pool
// is only read afterwards.
var intelSGXRoots = sync.OnceValue(parseIntelSGXRoots)

// read returns a collateral file, from the cache while the file keeps its
// size and modification time (an operator replacing TCB info or a CRL is
// seen at the next attestation). What the file says is verified by
// go-tdx-guest on every quote; only the read is saved.
func (g tdxCollateralGetter) read(path string) ([]byte, error) {
	if g.cache == nil {
		return ReadBounded(path, maxTDXCollateralBytes)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	key := cacheKey("tdx-file", []byte(path), []byte(strconv.FormatInt(st.Size(), 10)), []byte(strconv.FormatInt(st.ModTime().UnixNano(), 10)))
	if v, ok := g.cache.get(key); ok {
		return v.([]byte), nil
	}
	b, err := ReadBounded(path, maxTDXCollateralBytes)
	if err != nil {
		return nil, err
	}
	g.cache.put(key, b, int64(len(b)))
	return b, nil
}
