package keys

import (
	"encoding/json"
	"fmt"

	"golang.org/x/crypto/nacl/secretbox"
	"golang.org/x/crypto/scrypt"
)

// PEM types of cosign's password-protected private keys (cosign
// generate-key-pair): "ENCRYPTED SIGSTORE PRIVATE KEY" today, "ENCRYPTED
// COSIGN PRIVATE KEY" before cosign 2.
const (
	PEMSigstoreEncrypted = "ENCRYPTED SIGSTORE PRIVATE KEY"
	PEMCosignEncrypted   = "ENCRYPTED COSIGN PRIVATE KEY"
)

// sigstoreEnvelope is go-securesystemslib's encrypted format, which cosign
// puts inside the PEM block: scrypt derives a 32-byte key from the password,
// NaCl secretbox seals the PKCS#8 DER of the private key.
type sigstoreEnvelope struct {
	KDF struct {
		Name   string `json:"name"`
		Params struct {
			N int `json:"N"`
			R int `json:"r"`
			P int `json:"p"`
		} `json:"params"`
		Salt []byte `json:"salt"`
	} `json:"kdf"`
	Cipher struct {
		Name  string `json:"name"`
		Nonce []byte `json:"nonce"`
	} `json:"cipher"`
	Ciphertext []byte `json:"ciphertext"`
}

// Bounds on the scrypt cost a key file may ask for (cosign uses N=2^15,
// r=8, p=1): at most 1 GiB of memory.
const (
	maxScryptN = 1 << 20
	maxScryptR = 8
	maxScryptP = 16
)

// decryptSigstore opens a cosign encrypted key and returns the PKCS#8 DER.
func (m *Material) decryptSigstore(body, password []byte) ([]byte, error) {
	var e sigstoreEnvelope
	if err := json.Unmarshal(body, &e); err != nil {
		return nil, errorf(errMalformed, "%s: malformed cosign key: %v", m.Name, err)
	}
	p := e.KDF.Params
	switch {
	case e.KDF.Name != "scrypt" || e.Cipher.Name != "nacl/secretbox":
		return nil, errorf(errUnsupportedKey, "%s: cosign key uses %s/%s, want scrypt/nacl/secretbox", m.Name, e.KDF.Name, e.Cipher.Name)
	case p.N < 2 || p.N > maxScryptN || p.N&(p.N-1) != 0 || p.R < 1 || p.R > maxScryptR || p.P < 1 || p.P > maxScryptP:
		return nil, errorf(errUnsupportedKey, "%s: cosign key scrypt parameters N=%d r=%d p=%d out of bounds", m.Name, p.N, p.R, p.P)
	case len(e.Cipher.Nonce) != 24 || len(e.Ciphertext) < secretbox.Overhead:
		return nil, errorf(errMalformed, "%s: malformed cosign key: nonce or ciphertext size", m.Name)
	}
	if len(password) == 0 {
		return nil, &PasswordError{File: m.Name, Missing: true}
	}
	k, err := scrypt.Key(password, e.KDF.Salt, p.N, p.R, p.P, 32)
	if err != nil {
		return nil, fmt.Errorf("%s: scrypt: %w", m.Name, err)
	}
	defer clear(k)
	var key [32]byte
	var nonce [24]byte
	copy(key[:], k)
	copy(nonce[:], e.Cipher.Nonce)
	defer clear(key[:])
	der, ok := secretbox.Open(nil, e.Ciphertext, &nonce, &key)
	if !ok {
		return nil, &PasswordError{File: m.Name}
	}
	return der, nil
}
