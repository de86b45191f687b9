//go:build !cgo

package pkcs11

import (
	"crypto"
	"fmt"

	"github.com/coffer-dev/coffer/spec"
)

// errNoCgo: a PKCS#11 module is a C shared library, loaded only by a cgo
// build.
var errNoCgo = fmt.Errorf("pkcs11 needs a cgo build of coffer (CGO_ENABLED=1 make build-pkcs11): %w", spec.ErrUnsupported)

func tokenEncrypt(Config, *Key, Hash, []byte) ([]byte, error) { return nil, errNoCgo }

func tokenDecrypt(Config, *Key, []wrapped) ([]byte, error) { return nil, errNoCgo }

func tokenPublicKey(Config, *Key) (crypto.PublicKey, error) { return nil, errNoCgo }

func tokenSign(Config, *Key, bool, []byte) ([]byte, error) { return nil, errNoCgo }
