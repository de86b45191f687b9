package attest

import (
	"crypto/sha256"
	"crypto/sha512"
	"fmt"

	"github.com/BurntSushi/toml"

	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/spec"
)

// InitDataDigest hashes an initdata document as the guest measures it: the
// raw TOML bytes with the document's own "algorithm" (sha256, sha384 or
// sha512; sha384 when absent). Only format "toml" is known.
func InitDataDigest(d *protocol.InitData) ([]byte, error) {
	if d.Format != "toml" {
		return nil, fmt.Errorf("init-data format %q, want toml: %w", d.Format, spec.ErrUnsupported)
	}
	var doc struct {
		Version   string         `toml:"version"`
		Algorithm string         `toml:"algorithm"`
		Data      map[string]any `toml:"data"`
	}
	if _, err := toml.Decode(d.Body, &doc); err != nil {
		return nil, fmt.Errorf("init-data: %v: %w", err, spec.ErrUnsupported)
	}
	switch doc.Algorithm {
	case "sha256":
		s := sha256.Sum256([]byte(d.Body))
		return s[:], nil
	case "", "sha384":
		s := sha512.Sum384([]byte(d.Body))
		return s[:], nil
	case "sha512":
		s := sha512.Sum512([]byte(d.Body))
		return s[:], nil
	}
	return nil, fmt.Errorf("init-data algorithm %q: %w", doc.Algorithm, spec.ErrUnsupported)
}
