package recipients

import (
	"context"
	"crypto"
	gomlkem "crypto/mlkem"
	"fmt"

	"github.com/coffer-dev/coffer/keywrap"
	"github.com/coffer-dev/coffer/keywrap/keys"
	"github.com/coffer-dev/coffer/keywrap/mlkem"
)

// mlkem: ML-KEM-768 recipients (post-quantum), one JWE entry each under
// the jwe annotation (package mlkem); tools that do not know the algorithm
// skip those entries and use the others. Recipient files and key files are
// AKP JWKs (`coffer keygen --type mlkem768`).
var mlkemScheme = Scheme{
	Name: "mlkem", Value: "FILE", Annotation: mlkem.Scheme,
	Wrappers: func(_ context.Context, files []string, _ *session) ([]keywrap.Wrapper, error) {
		var out []keywrap.Wrapper
		var seen [][]byte
		for _, f := range files {
			data, err := keys.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("recipient mlkem:%s: %w", f, err)
			}
			ek, kid, err := mlkem.ParsePublicKey(data)
			if err != nil {
				return nil, fmt.Errorf("recipient mlkem:%s: %w", f, err)
			}
			if containsBytes(seen, ek.Bytes()) {
				continue
			}
			seen = append(seen, ek.Bytes())
			w, err := mlkem.NewWrapper(ek, kid)
			if err != nil {
				return nil, err
			}
			out = append(out, w)
		}
		return out, nil
	},
	ParseKey: func(data []byte) (crypto.PrivateKey, string, bool, error) {
		if !mlkem.IsKey(data) {
			return nil, "", false, nil
		}
		dk, kid, err := mlkem.ParsePrivateKey(data)
		return dk, kid, true, err
	},
	Uses: func(k crypto.PrivateKey) bool { _, ok := k.(*gomlkem.DecapsulationKey768); return ok },
	Unwrapper: func(privs []crypto.PrivateKey, _ []*keys.Material, _ *session) (keywrap.Unwrapper, error) {
		dks := make([]*gomlkem.DecapsulationKey768, len(privs))
		for i, k := range privs {
			dks[i] = k.(*gomlkem.DecapsulationKey768)
		}
		return mlkem.NewUnwrapper(dks...)
	},
	Describe: func(_ string, e []byte) ([]string, error) {
		lines, ok, err := mlkem.Describe(e)
		if !ok {
			return nil, mlkem.ErrNotThisScheme
		}
		return lines, err
	},
}

var (
	_ keywrap.Wrapper   = (*mlkem.Wrapper)(nil)
	_ keywrap.Unwrapper = (*mlkem.Unwrapper)(nil)
)

func containsBytes(list [][]byte, b []byte) bool {
	for _, x := range list {
		if string(x) == string(b) {
			return true
		}
	}
	return false
}
